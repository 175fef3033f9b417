// plinth.ts: the small helper library of plinth policy plugins written in TypeScript
// (or JavaScript). It wraps the host interface `plinth:policy/host`: structured logging,
// the operator's configuration parsed the way the Rust SDK parses it, and the error
// values of `policy-error`. Copy it into your plugin (`plinthctl plugin new --lang js`
// does) and import it with a relative path; componentize-js bundles it.
//
// Two rules of the JavaScript runtime (StarlingMonkey, pre-initialised with Wizer):
// * top-level code runs once at BUILD time, when the engine is snapshotted: do not call
//   host functions (log, config) at the top level, only inside the exported functions;
// * WIT `u64` values are `bigint`s, `u8`/`u32` are `number`s: keep money and durations
//   in bigint so that they are exact.

import {
  configGet,
  configKeys,
  log as hostLog,
  type Level,
} from 'plinth:policy/host@0.1.2';
import type { PolicyError } from 'plinth:policy/types@0.1.2';

/** Emit one structured record into the agent's log (fields as key/value strings). */
export function log(level: Level, message: string, fields: Record<string, string> = {}): void {
  hostLog(level, message, Object.entries(fields));
}

/** `log('debug', …)`. */
export const debug = (message: string, fields?: Record<string, string>): void =>
  log('debug', message, fields);
/** `log('info', …)`. */
export const info = (message: string, fields?: Record<string, string>): void =>
  log('info', message, fields);
/** `log('warn', …)`. */
export const warn = (message: string, fields?: Record<string, string>): void =>
  log('warn', message, fields);
/** `log('error', …)`. */
export const error = (message: string, fields?: Record<string, string>): void =>
  log('error', message, fields);

/**
 * A `policy-error` to throw from an exported function: componentize-js turns a thrown
 * value into the `err` case of the function's `result`.
 */
export function invalidInput(message: string): PolicyError {
  return { tag: 'invalid-input', val: message };
}

/** A `bad-config` policy error. */
export function badConfig(message: string): PolicyError {
  return { tag: 'bad-config', val: message };
}

/** An `internal` policy error. */
export function internal(message: string): PolicyError {
  return { tag: 'internal', val: message };
}

/** One configuration value, or `fallback` when the operator did not set it. */
export function configString(key: string, fallback: string): string {
  return configGet(key) ?? fallback;
}

/** Every configured key, sorted. */
export function configKeyList(): string[] {
  return configKeys();
}

/** Rust's `{:?}` of a plain string, as the Rust SDK's error messages show values. */
export function quoted(text: string): string {
  return JSON.stringify(text);
}

/**
 * Parse `text` as an unsigned integer of `bits` bits the way Rust's `str::parse` does
 * (optional `+`, decimal digits only, in range); `undefined` when it is not one.
 */
export function parseUnsigned(text: string, bits: number): bigint | undefined {
  if (!/^\+?[0-9]+$/.test(text)) {
    return undefined;
  }
  const value = BigInt(text);
  return value < 1n << BigInt(bits) ? value : undefined;
}

/**
 * An unsigned integer setting (`bits` wide), `fallback` when absent; a present but
 * unparsable value throws `bad-config` naming the key, as the Rust SDK's `config_parse`.
 */
export function configUnsigned(key: string, fallback: bigint, bits = 64): bigint {
  const text = configGet(key);
  if (text === undefined) {
    return fallback;
  }
  const value = parseUnsigned(text.trim(), bits);
  if (value === undefined) {
    throw badConfig(`config key ${key}: cannot parse ${quoted(text)}`);
  }
  return value;
}

/** A boolean setting (`true` or `false`), `fallback` when absent. */
export function configBool(key: string, fallback: boolean): boolean {
  const text = configGet(key);
  if (text === undefined) {
    return fallback;
  }
  switch (text.trim()) {
    case 'true':
      return true;
    case 'false':
      return false;
    default:
      throw badConfig(`config key ${key}: cannot parse ${quoted(text)}`);
  }
}

// Model names and settings repeat from call to call: lowering each once saves the
// interpreter a regular-expression pass per comparison (most of a quote's time).
const lowered = new Map<string, string>();

/** Lower-case ASCII letters only, as Rust's `to_ascii_lowercase` (memoised). */
export function asciiLower(text: string): string {
  let found = lowered.get(text);
  if (found === undefined) {
    found = text.replace(/[A-Z]/g, (letter) => String.fromCharCode(letter.charCodeAt(0) + 32));
    if (lowered.size >= 256) {
      lowered.clear();
    }
    lowered.set(text, found);
  }
  return found;
}

/** Whether `haystack` contains `needle`, ignoring ASCII case. */
export function containsIgnoreAsciiCase(haystack: string, needle: string): boolean {
  return asciiLower(haystack).includes(asciiLower(needle));
}

/**
 * Compare strings by Unicode code point (the order of their UTF-8 bytes, which is how
 * Rust orders `String`s); JavaScript's `<` compares UTF-16 code units instead.
 */
export function compareCodePoints(left: string, right: string): number {
  const a = Array.from(left);
  const b = Array.from(right);
  for (let index = 0; index < Math.min(a.length, b.length); index++) {
    const difference = (a[index].codePointAt(0) ?? 0) - (b[index].codePointAt(0) ?? 0);
    if (difference !== 0) {
      return difference;
    }
  }
  return a.length - b.length;
}

const POLICY_ERROR_TAGS = new Set(['invalid-input', 'bad-config', 'internal']);

/** Whether `value` is a `policy-error` (the `err` case the host understands). */
export function isPolicyError(value: unknown): value is PolicyError {
  return (
    typeof value === 'object' &&
    value !== null &&
    POLICY_ERROR_TAGS.has((value as { tag?: unknown }).tag as string) &&
    typeof (value as { val?: unknown }).val === 'string'
  );
}

/**
 * Wrap an exported function so that an exception other than a policy error (a
 * `TypeError`, a thrown `Error`) is logged with its stack and answered as an `internal`
 * policy error, instead of trapping without a word (the engine has no stdio here). The
 * host falls back to its built-in policy either way.
 */
export function guarded<A extends unknown[], R>(exported: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    try {
      return exported(...args);
    } catch (thrown) {
      if (isPolicyError(thrown)) {
        throw thrown;
      }
      const described =
        thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : `${String(thrown)}`;
      const stack = thrown instanceof Error && thrown.stack ? thrown.stack : '';
      error(`uncaught ${described}`, stack === '' ? {} : { stack });
      throw internal(`uncaught ${described}`);
    }
  };
}
