//! The PromQL evaluator. (Being built: see issue 3.)
