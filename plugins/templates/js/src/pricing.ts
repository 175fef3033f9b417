// {{name}}: a pricing policy for plinth, in TypeScript. A flat rate per GPU-hour
// (config `rate`, micro-units, default 2000000) times the GPUs and the hours asked for,
// rounded up to a micro-unit; refused when the host has too few free GPUs of the wanted
// model and memory, or when the tenant's maximum price is below the quote.

import type * as Pricing from 'plinth:policy/pricing@0.1.2';
import type { JobRequest, PricingState } from 'plinth:policy/types@0.1.2';

import {
  configString,
  configUnsigned,
  containsIgnoreAsciiCase,
  debug,
  guarded,
  info,
  invalidInput,
} from './plinth.js';

const U64_MAX = (1n << 64n) - 1n;

function price(req: JobRequest, state: PricingState): Pricing.PriceDecision {
  const rate = configUnsigned('rate', 2_000_000n);
  const currency = configString('currency', 'USDC');
  if (req.gpuCount === 0) {
    throw invalidInput('gpu-count is 0');
  }
  let free = 0;
  for (const gpuClass of state.classes) {
    const modelOk =
      req.gpuModel === undefined || containsIgnoreAsciiCase(gpuClass.model, req.gpuModel);
    if (modelOk && gpuClass.memoryMib >= req.minGpuMemoryMib) {
      free += gpuClass.free;
    }
  }
  if (free < req.gpuCount) {
    const reason = `only ${free} free gpus, ${req.gpuCount} wanted`;
    debug(`refusing ${req.requestId}: ${reason}`);
    return { tag: 'refuse', val: reason };
  }
  const total = rate * BigInt(req.gpuCount) * req.durationS;
  const priceMicros = (total + 3599n) / 3600n;
  if (priceMicros > U64_MAX) {
    return { tag: 'refuse', val: 'price overflows u64' };
  }
  if (req.maxPriceMicros !== undefined && req.maxPriceMicros < priceMicros) {
    return {
      tag: 'refuse',
      val: `max price ${req.maxPriceMicros} is below the quote ${priceMicros}`,
    };
  }
  info(`quoting ${priceMicros} for ${req.requestId}`);
  return {
    tag: 'offer',
    val: { priceMicros, currency, billableS: req.durationS, gpuHourMicros: rate },
  };
}

export const pricing = { price: guarded(price) } satisfies typeof Pricing;
