//! The TPM collector (feature `collect-tpm`): tss-esapi over libtss2's ESAPI.
//!
//! A [`TpmSession`] is one open ESAPI context on the configured TCTI
//! (`device:/dev/tpmrm0` on a host, `swtpm:host=127.0.0.1,port=N` in tests). It creates
//! the endorsement key from the TCG EK Credential Profile's template, reads the EK
//! certificate from its NV index, loads (or creates once, and persists with
//! TPM2_EvictControl) the attestation key at the configured handle, quotes the
//! configured PCRs with the bundle's binding digest as qualifying data, and runs
//! TPM2_ActivateCredential for enrollment.
//!
//! A TPM without a resource manager (swtpm, `/dev/tpm0`) has three object slots and a
//! few session slots, so every transient object and session this module creates is
//! flushed before the operation that created it returns, on success and on error alike
//! ([`TpmSession::loaded_handles`] lets tests prove it). Errors name the TPM operation
//! and decode the response code in words, by layer (TPM, ESAPI, TCTI, ...).
//!
//! Everything here blocks on the TPM; callers in async code run it on a blocking
//! thread, one session at a time.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use thiserror::Error;
use tss_esapi::abstraction::{self, AsymmetricAlgorithmSelection, DefaultKey};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCode;
use tss_esapi::constants::{CapabilityType, SessionType};
use tss_esapi::handles::{AuthHandle, KeyHandle, PersistentTpmHandle, SessionHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Data, EccScheme, EncryptedSecret, HashScheme, IdObject, PcrSelectionList,
    PcrSelectionListBuilder, PcrSlot, Public, RsaScheme, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::{Context, WrapperErrorKind};

use crate::collect::{EkAlgorithm, PcrSpec, check_ak_handle};
use crate::tpm::HashAlg;
use crate::tpm::pcrs::{self, PcrSelection, PcrValues};
use crate::tpm::quote::Attest;

/// The default TCTI: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// The default persistent handle of the agent's AK.
pub const DEFAULT_AK_HANDLE: u32 = 0x8101_0002;
/// The default event log: the kernel's copy of the firmware's TCG log.
pub const DEFAULT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// How often a quote is retaken when a PCR changed between the quote and the PCR read.
pub const QUOTE_ATTEMPTS: usize = 3;
/// The largest event log read (the kernel's logs are tens of kilobytes).
pub const MAX_EVENT_LOG_BYTES: u64 = 16 * 1024 * 1024;

/// What the TPM collector is told by the agent's `[attestation]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmSettings {
    /// The TCTI configuration string (`device:/dev/tpmrm0`, `swtpm:host=...,port=...`).
    pub tcti: String,
    /// The persistent handle of the AK (created there on first use).
    pub ak_handle: u32,
    /// The EK's algorithm (and with it the AK's).
    pub ek_algorithm: EkAlgorithm,
    /// The PCRs to quote.
    pub pcrs: PcrSpec,
    /// The TCG event log to read.
    pub event_log: PathBuf,
}

impl Default for TpmSettings {
    fn default() -> Self {
        Self {
            tcti: DEFAULT_TCTI.to_owned(),
            ak_handle: DEFAULT_AK_HANDLE,
            ek_algorithm: EkAlgorithm::default(),
            pcrs: PcrSpec::default(),
            event_log: PathBuf::from(DEFAULT_EVENT_LOG),
        }
    }
}

/// A response code of the TSS stack, decoded in words.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{text}")]
pub struct TpmResponse {
    /// The raw TSS2_RC, when the failure came from the stack (not from tss-esapi itself).
    pub code: Option<u32>,
    /// What it means, naming the layer that returned it.
    pub text: String,
}

/// Errors of the TPM collector; each names the operation that failed.
#[derive(Debug, Error)]
pub enum TpmCollectError {
    /// The TCTI string does not parse.
    #[error("invalid TPM TCTI {tcti:?} (use device:/dev/tpmrm0 or swtpm:host=HOST,port=PORT)")]
    Tcti {
        /// The string as configured.
        tcti: String,
        /// What tss-esapi said.
        #[source]
        source: TpmResponse,
    },
    /// A TPM (or TSS) operation failed.
    #[error("{operation}")]
    Command {
        /// The operation, e.g. `TPM2_Quote with the AK at 0x81010002`.
        operation: String,
        /// The decoded response code.
        #[source]
        source: TpmResponse,
    },
    /// The configured AK handle is not usable.
    #[error("attestation.ak_handle: {reason}")]
    AkHandle {
        /// Why.
        reason: String,
    },
    /// The object at the AK handle is not an attestation key.
    #[error(
        "the object at {handle:#010x} is not an attestation key (a restricted signing key fixed to this TPM); free the handle with tpm2_evictcontrol or choose another attestation.ak_handle"
    )]
    NotAnAttestationKey {
        /// The handle.
        handle: u32,
    },
    /// The PCRs kept changing between the quote and the PCR read.
    #[error("the quoted PCRs changed while they were read back, {attempts} times in a row")]
    PcrsUnstable {
        /// Attempts made.
        attempts: usize,
    },
    /// The TPM returned a quote this crate cannot parse.
    #[error("the TPM's quote does not parse: {reason}")]
    BadQuote {
        /// The parser's reason.
        reason: String,
    },
    /// The event log could not be read.
    #[error("cannot read the TCG event log {path}")]
    EventLog {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The event log is larger than any real one.
    #[error("the TCG event log {path} is larger than {MAX_EVENT_LOG_BYTES} bytes")]
    EventLogTooLarge {
        /// The configured path.
        path: PathBuf,
    },
    /// The enrollment challenge's blobs are not TPM structures of the right size.
    #[error("the credential challenge's {field} is not a valid {structure} ({len} bytes)")]
    BadChallenge {
        /// `id_object` or `encrypted_secret`.
        field: &'static str,
        /// The TPM structure expected.
        structure: &'static str,
        /// Its length.
        len: usize,
    },
}

/// Decodes a tss-esapi error: the layer of the stack that returned it and the response
/// code in words.
pub fn describe(err: tss_esapi::Error) -> TpmResponse {
    match err {
        tss_esapi::Error::WrapperError(kind) => TpmResponse {
            code: None,
            text: format!("tss-esapi: {kind}"),
        },
        tss_esapi::Error::Tss2Error(rc) => {
            let code = raw_code(rc);
            let text = match code {
                Some(code) => describe_code(code, &rc.to_string()),
                None => rc.to_string(),
            };
            TpmResponse { code, text }
        }
    }
}

/// The raw TSS2_RC: tss-esapi keeps it private but prints it as `Response code value:
/// 0x...` in the source of its error.
fn raw_code(rc: Tss2ResponseCode) -> Option<u32> {
    let inner = match rc {
        Tss2ResponseCode::Success => return Some(0),
        Tss2ResponseCode::FormatZero(inner) => inner.to_string(),
        Tss2ResponseCode::FormatOne(inner) => inner.to_string(),
    };
    let hex = inner.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// Words for a TSS2_RC; `tpm_text` is tss-esapi's decoding of TPM-layer codes.
fn describe_code(code: u32, tpm_text: &str) -> String {
    let layer = code >> 16;
    let base = code & 0xffff;
    let layer_name = match layer {
        0 => return format!("TPM: {tpm_text} (response code {code:#x})"),
        6 => "FAPI",
        7 => "ESAPI",
        8 => "SAPI",
        9 => "marshalling",
        10 => "TCTI",
        11 => "resource manager",
        12 => return format!("resource manager (TPM): {tpm_text} (response code {code:#x})"),
        _ => "unknown TSS layer",
    };
    let meaning = match base {
        1 => "general failure",
        2 => "not implemented",
        3 => "bad context",
        4 => "ABI mismatch",
        5 => "bad reference",
        6 => "insufficient buffer",
        7 => "bad sequence",
        8 => "no connection to the TPM",
        9 => "try again",
        10 => "I/O error talking to the TPM",
        11 => "bad value",
        12 => "not permitted",
        13 => "invalid sessions",
        14 => "no decrypt parameter",
        15 => "no encrypt parameter",
        16 => "bad size",
        17 => "malformed response",
        18 => "insufficient context",
        19 => "insufficient response",
        20 => "incompatible TCTI",
        21 => "not supported",
        22 => "bad TCTI structure",
        23 => "out of memory",
        24 => "invalid ESYS_TR handle",
        25 => "more than one decrypt session",
        26 => "more than one encrypt session",
        27 => "the response HMAC from the TPM did not verify",
        _ => "unknown error",
    };
    format!("{layer_name}: {meaning} (response code {code:#x})")
}

fn command(operation: impl Into<String>) -> impl FnOnce(tss_esapi::Error) -> TpmCollectError {
    let operation = operation.into();
    move |err| TpmCollectError::Command {
        operation,
        source: describe(err),
    }
}

/// The endorsement key: its public area and, when provisioned, its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndorsementKey {
    /// The algorithm the EK was created with.
    pub algorithm: EkAlgorithm,
    /// The public area as a TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC).
    pub public: Vec<u8>,
    /// The TPM Name (nameAlg || H(TPMT_PUBLIC)).
    pub name: Vec<u8>,
}

/// The attestation key at the configured handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationKey {
    /// The persistent handle.
    pub handle: u32,
    /// The public area as a TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC).
    pub public: Vec<u8>,
    /// The TPM Name (nameAlg || H(TPMT_PUBLIC)): what a credential is bound to.
    pub name: Vec<u8>,
    /// Whether this call created (and persisted) it.
    pub created: bool,
}

/// A quote and the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmQuote {
    /// The marshalled TPMS_ATTEST the AK signed.
    pub attest: Vec<u8>,
    /// The marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The quoted PCRs' values, read back after the quote and checked against its
    /// pcrDigest.
    pub pcrs: PcrValues,
    /// Quotes taken (more than one when a PCR changed while it was read back).
    pub attempts: usize,
}

/// Transient objects and sessions loaded in the TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadedHandles {
    /// Transient objects (0x80xxxxxx).
    pub transient_objects: usize,
    /// Loaded HMAC and policy sessions (0x02xxxxxx, 0x03xxxxxx).
    pub sessions: usize,
}

/// One open ESAPI context on the configured TCTI.
pub struct TpmSession {
    context: Context,
    settings: TpmSettings,
}

impl std::fmt::Debug for TpmSession {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TpmSession")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TpmSession {
    /// Opens the TCTI and starts an ESAPI context.
    pub fn open(settings: &TpmSettings) -> Result<Self, TpmCollectError> {
        check_ak_handle(settings.ak_handle)
            .map_err(|reason| TpmCollectError::AkHandle { reason })?;
        let tcti = TctiNameConf::from_str(&settings.tcti).map_err(|err| TpmCollectError::Tcti {
            tcti: settings.tcti.clone(),
            source: describe(err),
        })?;
        let context = Context::new(tcti).map_err(command(format!(
            "cannot open the TPM through TCTI {}",
            settings.tcti
        )))?;
        Ok(Self {
            context,
            settings: settings.clone(),
        })
    }

    /// The settings this session was opened with.
    pub fn settings(&self) -> &TpmSettings {
        &self.settings
    }

    fn ek_selection(&self) -> AsymmetricAlgorithmSelection {
        match self.settings.ek_algorithm {
            EkAlgorithm::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            EkAlgorithm::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            EkAlgorithm::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }

    /// Runs `work` with the EK loaded as a transient object, and flushes it afterwards
    /// whatever `work` returned.
    fn with_ek<T>(
        &mut self,
        work: impl FnOnce(&mut Self, KeyHandle) -> Result<T, TpmCollectError>,
    ) -> Result<T, TpmCollectError> {
        let algorithm = self.settings.ek_algorithm;
        let selection = self.ek_selection();
        let ek = abstraction::ek::create_ek_object_2(&mut self.context, selection, DefaultKey)
            .map_err(command(format!(
                "TPM2_CreatePrimary of the {algorithm} endorsement key"
            )))?;
        let result = work(self, ek);
        let flushed = self
            .context
            .flush_context(ek.into())
            .map_err(command("TPM2_FlushContext of the endorsement key"));
        let value = result?;
        flushed?;
        Ok(value)
    }

    /// Creates the EK from its template (the TPM derives the same key from its
    /// endorsement seed every time) and returns its public area.
    pub fn endorsement_key(&mut self) -> Result<EndorsementKey, TpmCollectError> {
        let algorithm = self.settings.ek_algorithm;
        self.with_ek(|session, ek| {
            let (public, name, _) = session
                .context
                .read_public(ek)
                .map_err(command("TPM2_ReadPublic of the endorsement key"))?;
            Ok(EndorsementKey {
                algorithm,
                public: tpm2b_public(&public, "the EK")?,
                name: name.value().to_vec(),
            })
        })
    }

    /// Lists the handles of one type (`first` is the type's first handle).
    fn handles(&mut self, first: u32) -> Result<Vec<u32>, TpmCollectError> {
        let mut found = Vec::new();
        let mut property = first;
        loop {
            let (data, more) = self
                .context
                .get_capability(CapabilityType::Handles, property, 254)
                .map_err(command(format!(
                    "TPM2_GetCapability of the handles from {first:#010x}"
                )))?;
            let CapabilityData::Handles(list) = data else {
                break;
            };
            let before = found.len();
            found.extend(
                list.into_inner()
                    .into_iter()
                    .map(u32::from)
                    .filter(|handle| handle >> 24 == first >> 24),
            );
            match found.last() {
                Some(last) if more && found.len() > before => property = last + 1,
                _ => break,
            }
        }
        Ok(found)
    }

    /// The transient objects and sessions loaded now (tests use this to prove that
    /// nothing is left behind).
    pub fn loaded_handles(&mut self) -> Result<LoadedHandles, TpmCollectError> {
        Ok(LoadedHandles {
            transient_objects: self.handles(0x8000_0000)?.len(),
            sessions: self.handles(0x0200_0000)?.len() + self.handles(0x0300_0000)?.len(),
        })
    }

    /// Reads the EK certificate from its NV index; `None` when the index is not
    /// defined (the manufacturer provisioned no certificate).
    pub fn ek_certificate(&mut self) -> Result<Option<Vec<u8>>, TpmCollectError> {
        let index = self.settings.ek_algorithm.certificate_nv_index();
        if !self.handles(0x0100_0000)?.contains(&index) {
            return Ok(None);
        }
        let selection = self.ek_selection();
        let certificate = abstraction::ek::retrieve_ek_pubcert(&mut self.context, selection)
            .map_err(command(format!(
                "TPM2_NV_Read of the EK certificate at {index:#010x}"
            )))?;
        Ok(Some(strip_nv_padding(certificate)))
    }

    fn persistent_handle(&self) -> Result<PersistentTpmHandle, TpmCollectError> {
        PersistentTpmHandle::new(self.settings.ak_handle).map_err(|err| TpmCollectError::AkHandle {
            reason: describe(err).text,
        })
    }

    /// Loads the AK at the configured handle, creating it under the EK and persisting
    /// it there first when the handle is empty.
    pub fn attestation_key(&mut self) -> Result<AttestationKey, TpmCollectError> {
        let handle = self.settings.ak_handle;
        let created = if self.handles(0x8100_0000)?.contains(&handle) {
            false
        } else {
            self.create_attestation_key()?;
            true
        };
        let (public, name) = self.with_ak(|session, ak| {
            let (public, name, _) = session.context.read_public(ak).map_err(command(format!(
                "TPM2_ReadPublic of the AK at {handle:#010x}"
            )))?;
            Ok((public, name))
        })?;
        let attributes = public.object_attributes();
        if !(attributes.restricted()
            && attributes.sign_encrypt()
            && !attributes.decrypt()
            && attributes.fixed_tpm())
        {
            return Err(TpmCollectError::NotAnAttestationKey { handle });
        }
        Ok(AttestationKey {
            handle,
            public: tpm2b_public(&public, "the AK")?,
            name: name.value().to_vec(),
            created,
        })
    }

    /// Runs `work` with an ESAPI handle on the persistent AK, closed afterwards.
    fn with_ak<T>(
        &mut self,
        work: impl FnOnce(&mut Self, KeyHandle) -> Result<T, TpmCollectError>,
    ) -> Result<T, TpmCollectError> {
        let handle = self.settings.ak_handle;
        let persistent = self.persistent_handle()?;
        let mut object = self
            .context
            .execute_without_session(|ctx| {
                ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent))
            })
            .map_err(command(format!("loading the AK at {handle:#010x}")))?;
        let result = work(self, KeyHandle::from(object));
        let closed = self
            .context
            .tr_close(&mut object)
            .map_err(command("closing the AK's ESAPI handle"));
        let value = result?;
        closed?;
        Ok(value)
    }

    /// Creates an AK under the EK (RSA 2048 RSASSA-SHA256 under an RSA EK, ECDSA on the
    /// EK's curve under an ECC EK) and persists it at the configured handle.
    fn create_attestation_key(&mut self) -> Result<(), TpmCollectError> {
        let handle = self.settings.ak_handle;
        let persistent = self.persistent_handle()?;
        let (hash, key, scheme) = match self.settings.ek_algorithm {
            EkAlgorithm::Rsa2048 => (
                HashingAlgorithm::Sha256,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
            EkAlgorithm::EccP256 => (
                HashingAlgorithm::Sha256,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            EkAlgorithm::EccP384 => (
                HashingAlgorithm::Sha384,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
                SignatureSchemeAlgorithm::EcDsa,
            ),
        };
        self.with_ek(|session, ek| {
            let created = abstraction::ak::create_ak_2(
                &mut session.context,
                ek,
                hash,
                key,
                scheme,
                None,
                DefaultKey,
            )
            .map_err(command("TPM2_Create of the attestation key under the EK"))?;
            let loaded = abstraction::ak::load_ak(
                &mut session.context,
                ek,
                None,
                created.out_private,
                created.out_public,
            )
            .map_err(command("TPM2_Load of the new attestation key"))?;
            let persisted = session
                .context
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.evict_control(
                        Provision::Owner,
                        loaded.into(),
                        Persistent::Persistent(persistent),
                    )
                })
                .map_err(command(format!(
                    "TPM2_EvictControl of the new attestation key to {handle:#010x}"
                )));
            let flushed = session
                .context
                .flush_context(loaded.into())
                .map_err(command("TPM2_FlushContext of the new attestation key"));
            let mut persisted = persisted?;
            flushed?;
            session
                .context
                .tr_close(&mut persisted)
                .map_err(command("closing the persisted AK's ESAPI handle"))?;
            Ok(())
        })
    }

    /// Quotes the configured PCRs with the AK, `qualifying_data` (the binding digest)
    /// as the quote's extraData, then reads the PCRs back; a quote whose PCRs changed
    /// in between is retaken (up to [`QUOTE_ATTEMPTS`] times).
    pub fn quote(&mut self, qualifying_data: &[u8]) -> Result<TpmQuote, TpmCollectError> {
        let handle = self.settings.ak_handle;
        let selection = pcr_selection_list(&self.settings.pcrs)?;
        let data = Data::try_from(qualifying_data.to_vec())
            .map_err(command("the quote's qualifying data (at most 64 bytes)"))?;
        self.with_ak(|session, ak| {
            let (public, _, _) = session.context.read_public(ak).map_err(command(format!(
                "TPM2_ReadPublic of the AK at {handle:#010x}"
            )))?;
            let scheme = quote_scheme(&public);
            for attempt in 1..=QUOTE_ATTEMPTS {
                let (attest, signature) = session
                    .context
                    .execute_with_session(Some(AuthSession::Password), |ctx| {
                        ctx.quote(ak, data.clone(), scheme, selection.clone())
                    })
                    .map_err(command(format!("TPM2_Quote with the AK at {handle:#010x}")))?;
                let attest = attest
                    .marshall()
                    .map_err(command("marshalling the quote's TPMS_ATTEST"))?;
                let signature = signature
                    .marshall()
                    .map_err(command("marshalling the quote's TPMT_SIGNATURE"))?;
                let parsed = Attest::parse(&attest).map_err(|err| TpmCollectError::BadQuote {
                    reason: plinth_toolbox::error_chain(&err),
                })?;
                let values = session.read_pcrs(&selection)?;
                if quoted_digest_matches(&parsed, &values) {
                    return Ok(TpmQuote {
                        attest,
                        signature,
                        pcrs: values,
                        attempts: attempt,
                    });
                }
            }
            Err(TpmCollectError::PcrsUnstable {
                attempts: QUOTE_ATTEMPTS,
            })
        })
    }

    fn read_pcrs(&mut self, selection: &PcrSelectionList) -> Result<PcrValues, TpmCollectError> {
        let data = self
            .context
            .execute_without_session(|ctx| abstraction::pcr::read_all(ctx, selection.clone()))
            .map_err(command("TPM2_PCR_Read of the quoted PCRs"))?;
        let mut values = PcrValues::new();
        for bank in self.settings.pcrs.banks() {
            let hashing = hashing_algorithm(bank.bank);
            let Some(read) = data.pcr_bank(hashing) else {
                continue;
            };
            for pcr in &bank.pcrs {
                if let Some(digest) = pcr_slot(*pcr).and_then(|slot| read.get_digest(slot)) {
                    values
                        .entry(bank.bank)
                        .or_default()
                        .insert(*pcr, digest.value().to_vec());
                }
            }
        }
        Ok(values)
    }

    /// TPM2_ActivateCredential: proves to an enrolling verifier that the AK (the
    /// credential's object) lives in the same TPM as the EK the challenge was encrypted
    /// to, and returns the credential (the verifier's secret).
    ///
    /// `credential_blob` and `encrypted_secret` are the buffers of a TPM2B_ID_OBJECT
    /// and a TPM2B_ENCRYPTED_SECRET (without their size), as TPM2_MakeCredential
    /// returns them.
    pub fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmCollectError> {
        let id_object = IdObject::try_from(credential_blob.to_vec()).map_err(|_| {
            TpmCollectError::BadChallenge {
                field: "id_object",
                structure: "TPM2B_ID_OBJECT buffer",
                len: credential_blob.len(),
            }
        })?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec()).map_err(|_| {
            TpmCollectError::BadChallenge {
                field: "encrypted_secret",
                structure: "TPM2B_ENCRYPTED_SECRET buffer",
                len: encrypted_secret.len(),
            }
        })?;
        let handle = self.settings.ak_handle;
        self.with_ak(|session, ak| {
            session.with_ek(|session, ek| {
                let (ek_public, _, _) = session
                    .context
                    .read_public(ek)
                    .map_err(command("TPM2_ReadPublic of the endorsement key"))?;
                // The low-range EK templates (RSA 2048, P-256) clear userWithAuth: the EK's
                // USER role is then only reachable by its policy, PolicySecret(endorsement).
                let ek_session = if ek_public.object_attributes().user_with_auth() {
                    None
                } else {
                    Some(session.endorsement_policy_session(ek_public.name_hashing_algorithm())?)
                };
                let activated = session
                    .context
                    .execute_with_sessions(
                        (
                            Some(AuthSession::Password),
                            Some(ek_session.unwrap_or(AuthSession::Password)),
                            None,
                        ),
                        |ctx| ctx.activate_credential(ak, ek, id_object, secret),
                    )
                    .map_err(command(format!(
                        "TPM2_ActivateCredential with the AK at {handle:#010x} and the EK"
                    )));
                let flushed = match ek_session {
                    Some(policy) => session
                        .context
                        .flush_context(SessionHandle::from(policy).into())
                        .map_err(command("TPM2_FlushContext of the EK's policy session")),
                    None => Ok(()),
                };
                let credential = activated?;
                flushed?;
                Ok(credential.value().to_vec())
            })
        })
    }

    /// Starts a policy session satisfying PolicySecret(TPM_RH_ENDORSEMENT), the
    /// policy of the TCG EK templates. The caller flushes it.
    fn endorsement_policy_session(
        &mut self,
        hash: HashingAlgorithm,
    ) -> Result<AuthSession, TpmCollectError> {
        let session = self
            .context
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                hash,
            )
            .map_err(command("TPM2_StartAuthSession of the EK's policy session"))?
            .ok_or_else(|| TpmCollectError::Command {
                operation: "TPM2_StartAuthSession of the EK's policy session".to_owned(),
                source: describe(tss_esapi::Error::WrapperError(
                    WrapperErrorKind::WrongValueFromTpm,
                )),
            })?;
        let satisfied = (|| {
            let (attributes, mask) = SessionAttributesBuilder::new()
                .with_decrypt(true)
                .with_encrypt(true)
                .build();
            self.context
                .tr_sess_set_attributes(session, attributes, mask)?;
            let policy = PolicySession::try_from(session)?;
            self.context
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.policy_secret(
                        policy,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map(|_| ())
        })();
        match satisfied {
            Ok(()) => Ok(session),
            Err(err) => {
                let _ = self
                    .context
                    .flush_context(SessionHandle::from(session).into());
                Err(command("TPM2_PolicySecret(endorsement) for the EK")(err))
            }
        }
    }
}

/// The scheme to quote with: the AK's own (Null lets the TPM use it), or RSASSA /
/// ECDSA with SHA-256 for an AK created without one.
fn quote_scheme(public: &Public) -> SignatureScheme {
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    match public {
        Public::Rsa { parameters, .. } if parameters.rsa_scheme() == RsaScheme::Null => {
            SignatureScheme::RsaSsa {
                hash_scheme: sha256,
            }
        }
        Public::Ecc { parameters, .. } if parameters.ecc_scheme() == EccScheme::Null => {
            SignatureScheme::EcDsa {
                hash_scheme: sha256,
            }
        }
        _ => SignatureScheme::Null,
    }
}

fn hashing_algorithm(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
        HashAlg::Sm3_256 => HashingAlgorithm::Sm3_256,
    }
}

fn pcr_slot(pcr: u32) -> Option<PcrSlot> {
    1u32.checked_shl(pcr)
        .and_then(|bit| PcrSlot::try_from(bit).ok())
}

/// The tss-esapi selection list for a PCR spec.
fn pcr_selection_list(spec: &PcrSpec) -> Result<PcrSelectionList, TpmCollectError> {
    let mut builder = PcrSelectionListBuilder::new();
    for bank in spec.banks() {
        let slots: Vec<PcrSlot> = bank.pcrs.iter().filter_map(|pcr| pcr_slot(*pcr)).collect();
        builder = builder.with_selection(hashing_algorithm(bank.bank), &slots);
    }
    builder
        .build()
        .map_err(command(format!("the PCR selection {spec}")))
}

/// Whether the PCR values read back are the ones the quote's pcrDigest covers.
fn quoted_digest_matches(attest: &Attest, values: &PcrValues) -> bool {
    let selection: &[PcrSelection] = &attest.pcr_select;
    // The pcrDigest is computed with the AK's nameAlg-independent signing hash; the
    // digest length tells which one.
    [
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sha1,
    ]
    .into_iter()
    .filter(|alg| alg.size() == attest.pcr_digest.len())
    .any(|alg| {
        pcrs::composite_digest(values, selection, alg)
            .is_ok_and(|digest| digest == attest.pcr_digest)
    })
}

/// A public area as TPM2B_PUBLIC: the marshalled TPMT_PUBLIC after its u16 size.
fn tpm2b_public(public: &Public, what: &str) -> Result<Vec<u8>, TpmCollectError> {
    let tpmt = public
        .marshall()
        .map_err(command(format!("marshalling {what}'s TPMT_PUBLIC")))?;
    let size = u16::try_from(tpmt.len()).map_err(|_| TpmCollectError::Command {
        operation: format!("marshalling {what}'s TPMT_PUBLIC"),
        source: describe(tss_esapi::Error::WrapperError(
            WrapperErrorKind::WrongParamSize,
        )),
    })?;
    let mut out = size.to_be_bytes().to_vec();
    out.extend(tpmt);
    Ok(out)
}

/// EK certificates are stored in NV indices sized by the manufacturer; some pad the DER
/// with zeros or 0xff. Keep exactly the outer DER SEQUENCE when its length is readable.
fn strip_nv_padding(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(len) = crate::collect::der_prefix(&bytes).map(<[u8]>::len) {
        bytes.truncate(len);
    }
    bytes
}

/// Reads the TCG event log (bounded; the kernel's file reports size 0, so the bound is
/// applied while reading).
pub fn read_event_log(path: &Path) -> Result<Vec<u8>, TpmCollectError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| TpmCollectError::EventLog {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_EVENT_LOG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TpmCollectError::EventLog {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_EVENT_LOG_BYTES {
        return Err(TpmCollectError::EventLogTooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// How long each step of a collection took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TpmTimings {
    /// Opening the TCTI and the ESAPI context.
    pub open: Duration,
    /// Reading the EK certificate from NV (and, the first time, creating the EK for its
    /// public area).
    pub ek: Duration,
    /// Loading (or, the first time, creating) the AK.
    pub ak: Duration,
    /// The quote and the PCR read-back.
    pub quote: Duration,
    /// Reading the event log.
    pub event_log: Duration,
}

/// Everything one collection gathers from the TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmCollection {
    /// The AK.
    pub ak: AttestationKey,
    /// The quote over the configured PCRs, bound to the binding digest.
    pub quote: TpmQuote,
    /// The EK certificate, when the TPM holds one.
    pub ek_certificate: Option<Vec<u8>>,
    /// The EK's public area (TPM2B_PUBLIC), when asked for.
    pub ek_public: Option<Vec<u8>>,
    /// The event log, or why it could not be read.
    pub event_log: crate::collect::Gathered<Vec<u8>>,
    /// Step timings.
    pub timings: TpmTimings,
}

/// One whole collection with a fresh collector (no cached EK public area): open, EK
/// certificate, AK, quote with `qualifying_data`, event log.
pub fn collect(
    settings: &TpmSettings,
    qualifying_data: &[u8],
) -> Result<TpmCollection, TpmCollectError> {
    TpmCollector::new(settings.clone()).collect(qualifying_data, false)
}

/// The agent's TPM: its settings and what never changes (the EK's public area), used by
/// one caller at a time (each call opens its own context, so tools can use the TPM in
/// between).
#[derive(Debug, Clone)]
pub struct TpmCollector {
    settings: TpmSettings,
    endorsement_key: Option<EndorsementKey>,
    ek_certificate: Option<Option<Vec<u8>>>,
}

impl TpmCollector {
    /// A collector for `settings`; nothing is opened yet.
    pub fn new(settings: TpmSettings) -> Self {
        Self {
            settings,
            endorsement_key: None,
            ek_certificate: None,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &TpmSettings {
        &self.settings
    }

    fn cached_ek(&mut self, session: &mut TpmSession) -> Result<EndorsementKey, TpmCollectError> {
        if let Some(ek) = &self.endorsement_key {
            return Ok(ek.clone());
        }
        let ek = session.endorsement_key()?;
        self.endorsement_key = Some(ek.clone());
        Ok(ek)
    }

    /// The EK certificate, read from NV once (an HMAC session and an NV read cost more
    /// than the quote) and cached: the manufacturer's certificate does not change.
    fn cached_ek_certificate(
        &mut self,
        session: &mut TpmSession,
    ) -> Result<Option<Vec<u8>>, TpmCollectError> {
        if let Some(certificate) = &self.ek_certificate {
            return Ok(certificate.clone());
        }
        let certificate = session.ek_certificate()?;
        self.ek_certificate = Some(certificate.clone());
        Ok(certificate)
    }

    /// One collection: open, EK certificate (read once, cached), the EK public area when
    /// `with_ek_public` (created once, cached), AK, quote with `qualifying_data`,
    /// event log. An unreadable event log does not fail the collection (the verifier
    /// then reports the replay as missing); everything else does.
    pub fn collect(
        &mut self,
        qualifying_data: &[u8],
        with_ek_public: bool,
    ) -> Result<TpmCollection, TpmCollectError> {
        let mut timings = TpmTimings::default();
        let started = Instant::now();
        let mut session = TpmSession::open(&self.settings)?;
        timings.open = started.elapsed();
        let started = Instant::now();
        let ek_certificate = self.cached_ek_certificate(&mut session)?;
        let ek_public = match with_ek_public {
            true => Some(self.cached_ek(&mut session)?.public),
            false => None,
        };
        timings.ek = started.elapsed();
        let started = Instant::now();
        let ak = session.attestation_key()?;
        timings.ak = started.elapsed();
        let started = Instant::now();
        let quote = session.quote(qualifying_data)?;
        timings.quote = started.elapsed();
        drop(session);
        let started = Instant::now();
        let event_log =
            crate::collect::Gathered::from_result(read_event_log(&self.settings.event_log));
        timings.event_log = started.elapsed();
        Ok(TpmCollection {
            ak,
            quote,
            ek_certificate,
            ek_public,
            event_log,
            timings,
        })
    }

    /// What an enrollment request needs: the EK, its certificate, and the AK (created
    /// and persisted when the handle is empty).
    pub fn identity(&mut self) -> Result<TpmIdentity, TpmCollectError> {
        let mut session = TpmSession::open(&self.settings)?;
        let endorsement_key = self.cached_ek(&mut session)?;
        let ek_certificate = self.cached_ek_certificate(&mut session)?;
        let attestation_key = session.attestation_key()?;
        Ok(TpmIdentity {
            endorsement_key,
            ek_certificate,
            attestation_key,
        })
    }

    /// TPM2_ActivateCredential (see [`TpmSession::activate_credential`]).
    pub fn activate_credential(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmCollectError> {
        TpmSession::open(&self.settings)?.activate_credential(credential_blob, encrypted_secret)
    }
}

/// The TPM's identity for enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmIdentity {
    /// The EK.
    pub endorsement_key: EndorsementKey,
    /// Its certificate, when the TPM holds one.
    pub ek_certificate: Option<Vec<u8>>,
    /// The AK.
    pub attestation_key: AttestationKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_codes_are_decoded_by_layer() {
        let tcti = describe_code(0x000a_000a, "ignored");
        assert_eq!(
            tcti,
            "TCTI: I/O error talking to the TPM (response code 0xa000a)"
        );
        let esapi = describe_code(0x0007_0018, "ignored");
        assert!(
            esapi.starts_with("ESAPI: invalid ESYS_TR handle"),
            "{esapi}"
        );
        let tpm = describe_code(0x0000_098e, "the authorization HMAC check failed");
        assert!(
            tpm.starts_with("TPM: the authorization HMAC check failed"),
            "{tpm}"
        );
        assert!(tpm.contains("0x98e"), "{tpm}");
    }

    #[test]
    fn tss_errors_keep_their_raw_code() {
        let rc = Tss2ResponseCode::from(0x0000_098e_u32);
        let response = describe(tss_esapi::Error::Tss2Error(rc));
        assert_eq!(response.code, Some(0x98e));
        assert!(response.text.starts_with("TPM: "), "{}", response.text);
        let wrapper = describe(tss_esapi::Error::WrapperError(
            WrapperErrorKind::WrongParamSize,
        ));
        assert_eq!(wrapper.code, None);
        assert!(wrapper.text.starts_with("tss-esapi: "), "{}", wrapper.text);
    }

    #[test]
    fn nv_padding_after_the_certificate_is_dropped() {
        let mut cert = vec![0x30, 0x03, 1, 2, 3];
        cert.extend([0xff; 7]);
        assert_eq!(strip_nv_padding(cert), vec![0x30, 0x03, 1, 2, 3]);
        let long = [vec![0x30, 0x82, 0x01, 0x00], vec![9; 0x100], vec![0; 4]].concat();
        assert_eq!(strip_nv_padding(long).len(), 0x104);
        // A length that runs past the data is left alone (the verifier refuses it).
        assert_eq!(strip_nv_padding(vec![0x30, 0x05, 1]), vec![0x30, 0x05, 1]);
    }

    #[test]
    fn missing_event_log_names_the_path() {
        let err = read_event_log(Path::new("/nonexistent/binary_bios_measurements")).unwrap_err();
        let text = plinth_toolbox::error_chain(&err);
        assert!(
            text.contains("/nonexistent/binary_bios_measurements"),
            "{text}"
        );
    }

    #[test]
    fn bad_tcti_and_handle_are_refused_before_any_tpm_access() {
        let settings = TpmSettings {
            tcti: "carrier-pigeon:x".to_owned(),
            ..TpmSettings::default()
        };
        let err = TpmSession::open(&settings).unwrap_err();
        assert!(err.to_string().contains("carrier-pigeon"), "{err}");
        let settings = TpmSettings {
            ak_handle: 0x8000_0001,
            ..TpmSettings::default()
        };
        let err = TpmSession::open(&settings).unwrap_err();
        assert!(err.to_string().contains("attestation.ak_handle"), "{err}");
    }

    #[test]
    fn absent_tpm_device_is_an_error_naming_the_tcti() {
        let settings = TpmSettings {
            tcti: "device:/nonexistent/tpmrm9".to_owned(),
            ..TpmSettings::default()
        };
        let err = TpmSession::open(&settings).unwrap_err();
        let text = plinth_toolbox::error_chain(&err);
        assert!(text.contains("device:/nonexistent/tpmrm9"), "{text}");
    }
}
