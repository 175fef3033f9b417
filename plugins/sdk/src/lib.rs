//! plinth-plugin-sdk (under construction).
