//! PolicySet (soon).
