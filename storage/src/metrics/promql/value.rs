//! Query results as the API returns them, and the intermediate values of evaluation.

use crate::metrics::{Labels, Sample};

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    /// The series' labels after evaluation (functions and operators may drop or
    /// change them).
    pub labels: Labels,
    /// Evaluation time, ms.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// One series of a matrix: a range query's points or a range vector's raw samples.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Points in time order.
    pub samples: Vec<Sample>,
}

/// The result of a query, one of PromQL's four value types.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number at an instant.
    Scalar {
        /// Evaluation time, ms.
        t: i64,
        /// The number.
        v: f64,
    },
    /// A string literal at an instant.
    String {
        /// Evaluation time, ms.
        t: i64,
        /// The string.
        v: String,
    },
    /// An instant vector, in evaluation order (which `sort()` and `topk` define).
    Vector(Vec<InstantSample>),
    /// A range vector, or a range query's result sorted by label set.
    Matrix(Vec<RangeSeries>),
}

/// The value of an expression over the steps of an evaluation grid.
#[derive(Debug)]
pub(crate) enum Val {
    /// One number per step.
    Scalar(Vec<f64>),
    /// A string (step invariant).
    Str(String),
    /// Series with points at (some of) the steps' times.
    Vector(Vec<RangeSeries>),
}

impl Val {
    /// Points held, for the samples limit.
    pub(crate) fn points(&self) -> usize {
        match self {
            Val::Scalar(v) => v.len(),
            Val::Str(_) => 0,
            Val::Vector(m) => m.iter().map(|s| s.samples.len()).sum(),
        }
    }
}
