//! SEV-SNP evidence collection (in progress).
