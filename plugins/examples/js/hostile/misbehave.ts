// Hostile pricing plugin in TypeScript, used by the host's containment tests: the
// operator config key `mode` picks the misbehaviour, as in the Rust
// plugins/examples/hostile/misbehave: `loop` (spins forever), `membomb` (allocates
// without bound), `recursion` (unbounded JS recursion), `throw` (throws an Error that
// is not a policy-error; `throw-guarded` the same through `guarded`), `huge-output` (a 256 KiB answer), `garbage` (an invalid
// currency), `log-flood` (2000 log records); anything else answers a fixed valid quote.
// With `only-tenant` set it misbehaves only for that tenant, so it passes the host's
// self-test and turns hostile later.

import type * as Pricing from 'plinth:policy/pricing@0.1.2';
import type { JobRequest, PricingState } from 'plinth:policy/types@0.1.2';

import { configString, guarded, info } from '../lib/plinth.js';

function recurse(depth: number): number {
  return recurse(depth + 1) + 1;
}

function price(req: JobRequest, _state: PricingState): Pricing.PriceDecision {
  let mode = configString('mode', '');
  const target = configString('only-tenant', '');
  if (target !== '' && target !== req.tenant) {
    mode = '';
  }
  switch (mode) {
    case 'loop': {
      let counter = 0;
      for (;;) {
        counter = (counter + 1) | 0;
      }
    }
    case 'membomb': {
      const hoard: Uint8Array[] = [];
      for (;;) {
        hoard.push(new Uint8Array(4 << 20).fill(0xa5));
      }
    }
    case 'recursion':
      return { tag: 'refuse', val: String(recurse(0)) };
    case 'throw':
      throw new Error(`thrown on purpose for ${req.requestId}`);
    case 'throw-guarded':
      return guarded((): Pricing.PriceDecision => {
        throw new Error(`thrown on purpose for ${req.requestId}`);
      })();
    case 'huge-output':
      return { tag: 'refuse', val: 'x'.repeat(256 << 10) };
    case 'garbage':
      return {
        tag: 'offer',
        val: {
          priceMicros: 1n,
          currency: '\u0000\u0007not a currency code at all',
          billableS: 0n,
          gpuHourMicros: 0n,
        },
      };
    case 'log-flood':
      for (let line = 0; line < 2000; line++) {
        info(`flood line ${line}`);
      }
      return { tag: 'refuse', val: 'flooded' };
    default:
      return {
        tag: 'offer',
        val: { priceMicros: 42n, currency: 'USDC', billableS: 60n, gpuHourMicros: 2520n },
      };
  }
}

export const pricing = { price } satisfies typeof Pricing;
