//! plinth-attestation (under construction).
