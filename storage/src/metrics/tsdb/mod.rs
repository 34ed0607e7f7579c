//! The time-series store. (Being built: see issue 3.)
