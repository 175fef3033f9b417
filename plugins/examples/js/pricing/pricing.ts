// Example pricing plugin in TypeScript: the same policy as the Rust example
// (plugins/examples/pricing/src/logic.rs), producing the same answers on its fixtures
// (plugins/examples/pricing/fixtures, checked by the host's tests): a per-GPU-hour rate
// by GPU model plus a per-GiB memory component, a surcharge when the host is busy, a
// minimum billable time, and refusal of offers below a floor.
//
// Operator configuration (all optional): `rate.<model>` (micro-units per GPU-hour,
// matched as a case-insensitive substring of the model name), `rate.default`,
// `per-gib-hour`, `surcharge.threshold-pct`, `surcharge.pct`, `min-billable-s`,
// `floor-gpu-hour`, `currency`.

import type * as Pricing from 'plinth:policy/pricing@0.1.2';
import type { GpuClass, JobRequest, PricingState } from 'plinth:policy/types@0.1.2';

import {
  asciiLower,
  configKeyList,
  configString,
  configUnsigned,
  containsIgnoreAsciiCase,
  debug,
  guarded,
  invalidInput,
} from '../lib/plinth.js';

interface PricingConfig {
  /** (model substring, micro-units per GPU-hour), first match wins. */
  modelRates: Array<[string, bigint]>;
  defaultRate: bigint;
  perGibHour: bigint;
  surchargeThresholdPct: bigint;
  surchargePct: bigint;
  minBillableS: bigint;
  floorGpuHour: bigint;
  currency: string;
}

const U64_MAX = (1n << 64n) - 1n;

// The Rust example computes the GPU-hour rate in u64, which wraps in its release build;
// so does this, so that absurd configurations give the same answers in both.
const wrap64 = (value: bigint): bigint => BigInt.asUintN(64, value);

function readConfig(): PricingConfig {
  const modelRates: Array<[string, bigint]> = [
    ['h200', 3_200_000n],
    ['h100', 2_500_000n],
    ['a100', 1_400_000n],
    ['l40s', 900_000n],
    ['rtx 4090', 400_000n],
  ];
  for (const key of configKeyList()) {
    if (key.startsWith('rate.') && key !== 'rate.default') {
      modelRates.unshift([asciiLower(key.slice('rate.'.length)), configUnsigned(key, 0n)]);
    }
  }
  return {
    modelRates,
    defaultRate: configUnsigned('rate.default', 600_000n),
    perGibHour: configUnsigned('per-gib-hour', 5_000n),
    surchargeThresholdPct: configUnsigned('surcharge.threshold-pct', 75n, 8),
    surchargePct: configUnsigned('surcharge.pct', 20n),
    minBillableS: configUnsigned('min-billable-s', 600n),
    floorGpuHour: configUnsigned('floor-gpu-hour', 300_000n),
    currency: configString('currency', 'USDC'),
  };
}

// The configuration is read-only for the life of an instance: parse it on the first
// call (not at the top level, which runs at build time) and keep it, or its error.
let cached: { config: PricingConfig } | { error: unknown } | undefined;

function config(): PricingConfig {
  if (cached === undefined) {
    try {
      cached = { config: readConfig() };
    } catch (error) {
      cached = { error };
    }
  }
  if ('error' in cached) {
    throw cached.error;
  }
  return cached.config;
}

function modelRate(settings: PricingConfig, model: string): bigint {
  const found = settings.modelRates.find(([needle]) => containsIgnoreAsciiCase(model, needle));
  return found === undefined ? settings.defaultRate : found[1];
}

const ceilDiv = (numerator: bigint, denominator: bigint): bigint =>
  (numerator + denominator - 1n) / denominator;

function price(req: JobRequest, state: PricingState): Pricing.PriceDecision {
  const settings = config();
  if (req.gpuCount === 0) {
    throw invalidInput('gpu-count is 0');
  }
  let chosen: GpuClass | undefined;
  let free = 0;
  for (const gpuClass of state.classes) {
    if (gpuClass.free === 0 || gpuClass.memoryMib < req.minGpuMemoryMib) {
      continue;
    }
    if (req.gpuModel !== undefined && !containsIgnoreAsciiCase(gpuClass.model, req.gpuModel)) {
      continue;
    }
    free += gpuClass.free;
    chosen ??= gpuClass;
  }
  const refuse = (reason: string): Pricing.PriceDecision => {
    debug(`refusing ${req.requestId}: ${reason}`);
    return { tag: 'refuse', val: reason };
  };
  if (chosen === undefined || free < req.gpuCount) {
    return refuse(`only ${free} matching free gpus, ${req.gpuCount} wanted`);
  }
  const memoryGib = chosen.memoryMib / 1024n;
  let gpuHour = wrap64(modelRate(settings, chosen.model) + wrap64(memoryGib * settings.perGibHour));
  if (BigInt(state.utilisationPct) >= settings.surchargeThresholdPct) {
    gpuHour = wrap64(gpuHour + wrap64(gpuHour * settings.surchargePct) / 100n);
  }
  const gpuCount = BigInt(req.gpuCount);
  const billableS = req.durationS > settings.minBillableS ? req.durationS : settings.minBillableS;
  const priceMicros = ceilDiv(gpuHour * gpuCount * billableS, 3600n);
  if (priceMicros > U64_MAX) {
    return refuse('price overflows u64');
  }
  if (req.maxPriceMicros !== undefined) {
    const offeredRate = (req.maxPriceMicros * 3600n) / (gpuCount * billableS);
    if (offeredRate < settings.floorGpuHour) {
      return refuse(
        `offer of ${offeredRate} per gpu-hour is below the floor of ${settings.floorGpuHour}`,
      );
    }
    if (req.maxPriceMicros < priceMicros) {
      return refuse(`max price ${req.maxPriceMicros} is below the quote ${priceMicros}`);
    }
  }
  return {
    tag: 'offer',
    val: { priceMicros, currency: settings.currency, billableS, gpuHourMicros: gpuHour },
  };
}

export const pricing = { price: guarded(price) } satisfies typeof Pricing;
