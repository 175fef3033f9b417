//! Signed quotes and leases: the wire types of `POST /v1/quotes` and `POST /v1/leases`,
//! the quote's signature (Ed25519 by the node key over a domain-separated canonical
//! JSON), and the checks a lease makes of the quote it carries and of the GPUs the
//! scheduling policy assigns.

use plinth_plugin_host::{DecisionSource, HostState, JobRequest, PriceDecision, PricingState};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::identity::NodeIdentity;

/// The `format` of every quote.
pub const QUOTE_FORMAT: &str = "plinth-quote/1";

/// What a quote signature is computed over starts with this.
pub const QUOTE_SIGNING_DOMAIN: &[u8] = b"plinth-quote/1 signature\n";

/// Errors of quotes and leases; each names the field it is about.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// A field of the request is unacceptable (422).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, dotted (`quote.expires_at_ms`).
        field: String,
        /// Why.
        reason: String,
    },
    /// The quote was not issued to the caller (403).
    #[error("quote.client_id: quote {quote_id} was issued to {issued_to:?}, not to {caller:?}")]
    Foreign {
        /// The quote.
        quote_id: String,
        /// Its client.
        issued_to: String,
        /// The caller.
        caller: String,
    },
    /// An id is reused for a different request, or a quote is used twice (409).
    #[error("{0}")]
    Conflict(String),
    /// The canonical form could not be computed.
    #[error("cannot encode the quote")]
    Canonical(#[from] plinth_attestation::canonical::CanonicalError),
    /// The quote could not be serialised.
    #[error("cannot encode the quote")]
    Json(#[from] serde_json::Error),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> QuoteError {
    QuoteError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A tenant's job request, as the pricing and scheduling policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequestBody {
    /// Number of GPUs wanted.
    #[schema(maximum = 64)]
    pub gpu_count: u32,
    /// Wanted GPU model (substring of the product name), if the tenant cares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub gpu_model: Option<String>,
    /// Minimum memory per GPU in MiB.
    #[serde(default)]
    pub min_gpu_memory_mib: u64,
    /// Expected run time in seconds.
    #[schema(minimum = 1, maximum = 2592000)]
    pub duration_s: u64,
    /// Highest total price the tenant accepts, in micro-units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price_micros: Option<u64>,
}

impl JobRequestBody {
    /// Checks the bounds the policies rely on.
    pub fn validate(&self, prefix: &str) -> Result<(), QuoteError> {
        if self.gpu_count > 64 {
            return Err(invalid(
                format!("{prefix}.gpu_count"),
                format!("{} is more than 64", self.gpu_count),
            ));
        }
        if self.duration_s == 0 || self.duration_s > 30 * 24 * 3600 {
            return Err(invalid(
                format!("{prefix}.duration_s"),
                format!("{} is not between 1 and 2592000 (30 days)", self.duration_s),
            ));
        }
        if let Some(model) = &self.gpu_model
            && (model.is_empty() || model.len() > 128)
        {
            return Err(invalid(
                format!("{prefix}.gpu_model"),
                "must be 1 to 128 characters",
            ));
        }
        Ok(())
    }

    /// The WIT `job-request` for the policies.
    pub fn to_policy(&self, request_id: &str, tenant: &str) -> JobRequest {
        JobRequest {
            request_id: request_id.to_owned(),
            tenant: tenant.to_owned(),
            gpu_count: self.gpu_count,
            gpu_model: self.gpu_model.clone(),
            min_gpu_memory_mib: self.min_gpu_memory_mib,
            duration_s: self.duration_s,
            max_price_micros: self.max_price_micros,
        }
    }
}

/// `POST /v1/quotes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// The caller's name as configured (must be the authenticated client).
    pub client_id: String,
    /// The caller's id for this quote (idempotency key): 1 to 128 of `[A-Za-z0-9_.:@-]`.
    #[schema(pattern = "^[A-Za-z0-9_.:@-]{1,128}$")]
    pub quote_id: String,
    /// What the tenant wants.
    pub request: JobRequestBody,
}

/// The priced offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteOffer {
    /// Total price in micro-units of `currency`.
    pub price_micros: u64,
    /// Currency code.
    pub currency: String,
    /// Seconds billed.
    pub billable_s: u64,
    /// Price of one GPU-hour in micro-units (what prices the lease's receipts).
    pub gpu_hour_micros: u64,
}

/// The policy that priced a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PricingPolicy {
    /// `plugin` or `built-in`.
    pub source: String,
    /// The plugin's name (plugins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The plugin's version (plugins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// SHA-256 (hex) of the plugin's wasm, or of the built-in policy's settings.
    pub sha256: String,
    /// Why an installed plugin was not used (it failed; the built-in policy answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_error: Option<String>,
}

/// A quote signed by the node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedQuote {
    /// Always `plinth-quote/1`.
    pub format: String,
    /// The client's quote id.
    pub quote_id: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The node key (hex Ed25519) that signed it.
    pub node_key: String,
    /// The request as the pricing policy saw it.
    pub request: JobRequestBody,
    /// The host state the pricing policy saw (the WIT `pricing-state`).
    #[schema(value_type = Object)]
    pub pricing_state: serde_json::Value,
    /// The price.
    pub offer: QuoteOffer,
    /// Who priced it.
    pub pricing: PricingPolicy,
    /// Issued, Unix ms.
    pub issued_at_ms: u64,
    /// Valid until, Unix ms (exclusive).
    pub expires_at_ms: u64,
    /// Hex Ed25519 signature over [`SignedQuote::signing_bytes`].
    pub signature: String,
}

impl SignedQuote {
    /// The bytes the signature covers: [`QUOTE_SIGNING_DOMAIN`], then the canonical JSON
    /// of the quote without `signature`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, QuoteError> {
        let mut value = serde_json::to_value(self)?;
        if let serde_json::Value::Object(map) = &mut value {
            map.remove("signature");
        }
        let mut bytes = QUOTE_SIGNING_DOMAIN.to_vec();
        plinth_attestation::canonical::write_canonical(&value, &mut bytes)?;
        Ok(bytes)
    }

    /// Signs with the node key.
    pub fn sign(&mut self, identity: &NodeIdentity) -> Result<(), QuoteError> {
        self.signature = hex::encode(identity.sign(&self.signing_bytes()?));
        Ok(())
    }

    /// Checks everything a lease checks of a quote, except whether it was used: format,
    /// node, signature, client, expiry.
    pub fn check(&self, node_key: &str, caller: &str, now_ms: u64) -> Result<(), QuoteError> {
        if self.format != QUOTE_FORMAT {
            return Err(invalid(
                "quote.format",
                format!("{:?} is not {QUOTE_FORMAT}", self.format),
            ));
        }
        if self.node_key != node_key {
            return Err(invalid(
                "quote.node_key",
                format!(
                    "quote was signed by node {}, not by this node ({node_key})",
                    self.node_key
                ),
            ));
        }
        let signature =
            hex::decode(&self.signature).map_err(|_| invalid("quote.signature", "is not hex"))?;
        let key = hex::decode(node_key).map_err(|_| invalid("quote.node_key", "is not hex"))?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&self.signing_bytes()?, &signature)
            .map_err(|_| {
                invalid(
                    "quote.signature",
                    "does not verify under the node key (the quote was altered or forged)",
                )
            })?;
        if self.client_id != caller {
            return Err(QuoteError::Foreign {
                quote_id: self.quote_id.clone(),
                issued_to: self.client_id.clone(),
                caller: caller.to_owned(),
            });
        }
        if now_ms >= self.expires_at_ms {
            return Err(invalid(
                "quote.expires_at_ms",
                format!(
                    "quote {} expired at {} (now {now_ms})",
                    self.quote_id, self.expires_at_ms
                ),
            ));
        }
        Ok(())
    }
}

/// What pricing decided: a quote to sign, or a refusal with its reason.
#[derive(Debug, Clone)]
pub enum Priced {
    /// The offer and who made it.
    Offer(QuoteOffer, PricingPolicy),
    /// The refusal and who made it.
    Refused(String, PricingPolicy),
}

/// The [`PricingPolicy`] of a decision: the plugin's wasm hash, or the built-in one.
pub fn pricing_policy(
    source: &DecisionSource,
    plugin_sha256: Option<String>,
    built_in_sha256: String,
) -> PricingPolicy {
    match source {
        DecisionSource::Plugin { name, version } => PricingPolicy {
            source: "plugin".to_owned(),
            name: Some(name.clone()),
            version: Some(version.clone()),
            sha256: plugin_sha256.unwrap_or(built_in_sha256),
            plugin_error: None,
        },
        DecisionSource::BuiltIn { plugin_error } => PricingPolicy {
            source: "built-in".to_owned(),
            name: None,
            version: None,
            sha256: built_in_sha256,
            plugin_error: plugin_error.clone(),
        },
    }
}

/// The [`Priced`] of a pricing decision.
pub fn priced(decision: PriceDecision, policy: PricingPolicy) -> Priced {
    match decision {
        PriceDecision::Offer(quote) => Priced::Offer(
            QuoteOffer {
                price_micros: quote.price_micros,
                currency: quote.currency,
                billable_s: quote.billable_s,
                gpu_hour_micros: quote.gpu_hour_micros,
            },
            policy,
        ),
        PriceDecision::Refuse(reason) => Priced::Refused(reason, policy),
    }
}

/// Builds the unsigned quote of an offer.
#[allow(clippy::too_many_arguments)]
pub fn unsigned_quote(
    request: &QuoteRequest,
    node_key: String,
    pricing_state: &PricingState,
    offer: QuoteOffer,
    pricing: PricingPolicy,
    issued_at_ms: u64,
    ttl_ms: u64,
) -> Result<SignedQuote, QuoteError> {
    Ok(SignedQuote {
        format: QUOTE_FORMAT.to_owned(),
        quote_id: request.quote_id.clone(),
        client_id: request.client_id.clone(),
        node_key,
        request: request.request.clone(),
        pricing_state: serde_json::to_value(pricing_state)?,
        offer,
        pricing,
        issued_at_ms,
        expires_at_ms: issued_at_ms.saturating_add(ttl_ms),
        signature: String::new(),
    })
}

/// Checks a client-chosen id (quote, lease): 1 to 128 of `[A-Za-z0-9_.:@-]`.
pub fn check_id(field: &str, value: &str) -> Result<(), QuoteError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_.:@-".contains(&byte));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value:?} is not 1 to 128 of [A-Za-z0-9_.:@-]"),
        ))
    }
}

/// Checks the GPU indices a scheduling policy admitted: as many as requested, distinct,
/// each on the host, neither drained nor allocated. The host never trusts the plugin's
/// answer. Returns the admitted GPUs' UUIDs in the order given.
pub fn check_assignment(
    indices: &[u32],
    wanted: u32,
    state: &HostState,
) -> Result<Vec<String>, String> {
    if indices.len() != wanted as usize {
        return Err(format!(
            "assigned {} gpus for a request of {wanted}",
            indices.len()
        ));
    }
    let mut uuids = Vec::with_capacity(indices.len());
    for (position, index) in indices.iter().enumerate() {
        if indices[..position].contains(index) {
            return Err(format!("assigned gpu {index} twice"));
        }
        let Some(gpu) = state.gpus.iter().find(|gpu| gpu.index == *index) else {
            return Err(format!(
                "assigned gpu {index}, which does not exist on this host ({} gpus)",
                state.gpus.len()
            ));
        };
        if gpu.drained {
            return Err(format!(
                "assigned gpu {index} ({}), which is drained",
                gpu.uuid
            ));
        }
        if gpu.allocated {
            return Err(format!(
                "assigned gpu {index} ({}), which is allocated to a running job",
                gpu.uuid
            ));
        }
        uuids.push(gpu.uuid.clone());
    }
    Ok(uuids)
}

/// `POST /v1/leases`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The caller's id for this lease (idempotency key): 1 to 128 of `[A-Za-z0-9_.:@-]`.
    #[schema(pattern = "^[A-Za-z0-9_.:@-]{1,128}$")]
    pub lease_id: String,
    /// The signed quote, exactly as `POST /v1/quotes` answered it.
    pub quote: SignedQuote,
    /// The job spec (`plinth-job/1`); its `gpus.count` must be the quote's.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
}

/// The answer of `POST /v1/leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseAnswer {
    /// The lease.
    pub lease_id: String,
    /// The quote it consumed.
    pub quote_id: String,
    /// The job it started.
    pub job_id: String,
    /// CDI names of the GPUs assigned.
    pub gpu_devices: Vec<String>,
    /// Who decided the assignment (`plugin` with its name, or `built-in`).
    #[schema(value_type = Object)]
    pub scheduled_by: serde_json::Value,
}

/// A lease the scheduling policy did not admit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refusal {
    /// What went wrong, for people.
    pub error: String,
    /// The policy's (or the host's) reason.
    pub reason: String,
    /// When the policy deferred: retry after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u32>,
}

#[cfg(test)]
mod tests {
    use plinth_plugin_host::policy::sample_inputs;

    use super::*;

    fn quote(identity: &NodeIdentity) -> SignedQuote {
        let request = QuoteRequest {
            client_id: "market-a".to_owned(),
            quote_id: "q1".to_owned(),
            request: JobRequestBody {
                gpu_count: 1,
                gpu_model: None,
                min_gpu_memory_mib: 0,
                duration_s: 60,
                max_price_micros: None,
            },
        };
        let (_, state, _) = sample_inputs();
        let mut quote = unsigned_quote(
            &request,
            identity.public_key_hex(),
            &plinth_plugin_host::summarize(&state),
            QuoteOffer {
                price_micros: 10,
                currency: "USDC".to_owned(),
                billable_s: 600,
                gpu_hour_micros: 60,
            },
            pricing_policy(
                &DecisionSource::BuiltIn { plugin_error: None },
                None,
                "ab".repeat(32),
            ),
            1_000,
            5_000,
        )
        .unwrap();
        quote.sign(identity).unwrap();
        quote
    }

    #[test]
    fn signed_quote_checks_and_refusals_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let identity = NodeIdentity::create(&dir.path().join("node.key")).unwrap();
        let other = NodeIdentity::create(&dir.path().join("other.key")).unwrap();
        let node = identity.public_key_hex();
        let good = quote(&identity);
        good.check(&node, "market-a", 2_000).unwrap();
        let check = |quote: &SignedQuote, caller: &str, now: u64| {
            quote.check(&node, caller, now).unwrap_err().to_string()
        };
        assert!(check(&good, "market-a", 6_000).starts_with("quote.expires_at_ms"));
        assert!(check(&good, "market-b", 2_000).starts_with("quote.client_id"));
        let mut cheaper = good.clone();
        cheaper.offer.gpu_hour_micros = 1;
        assert!(check(&cheaper, "market-a", 2_000).starts_with("quote.signature"));
        let foreign = quote(&other);
        assert!(check(&foreign, "market-a", 2_000).starts_with("quote.node_key"));
        let mut resigned = foreign.clone();
        resigned.node_key = node.clone();
        assert!(check(&resigned, "market-a", 2_000).starts_with("quote.signature"));
    }

    #[test]
    fn assignments_are_checked_against_the_host() {
        let (_, mut state, _) = sample_inputs();
        state.gpus[1].drained = true;
        state.gpus[2].allocated = true;
        assert_eq!(
            check_assignment(&[0, 3], 2, &state).unwrap(),
            ["GPU-sample-0", "GPU-sample-3"]
        );
        for (indices, wanted, needle) in [
            (vec![7], 1, "does not exist"),
            (vec![1], 1, "drained"),
            (vec![2], 1, "allocated"),
            (vec![0, 0], 2, "twice"),
            (vec![0], 2, "assigned 1 gpus"),
        ] {
            let error = check_assignment(&indices, wanted, &state).unwrap_err();
            assert!(error.contains(needle), "{indices:?}: {error}");
        }
    }

    #[test]
    fn ids_and_requests_are_bounded() {
        check_id("quote_id", "q-1:a@b").unwrap();
        for bad in ["", "a b", &"x".repeat(129)] {
            assert!(
                check_id("quote_id", bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("quote_id")
            );
        }
        let mut request = JobRequestBody {
            gpu_count: 1,
            gpu_model: None,
            min_gpu_memory_mib: 0,
            duration_s: 0,
            max_price_micros: None,
        };
        assert!(
            request
                .validate("request")
                .unwrap_err()
                .to_string()
                .starts_with("request.duration_s")
        );
        request.duration_s = 10;
        request.gpu_count = 65;
        assert!(
            request
                .validate("request")
                .unwrap_err()
                .to_string()
                .starts_with("request.gpu_count")
        );
    }
}
