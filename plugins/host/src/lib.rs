//! plinth-plugin-host (under construction).
