//! plinth-agent (under construction).
