//! plinth-jobs (under construction).
