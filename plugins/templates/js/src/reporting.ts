// {{name}}: a reporting policy for plinth, in TypeScript. One report record per tenant,
// sorted by tenant, over the period its usage records cover: `gpu-seconds`,
// `charged-micros` and the number of usage `records`.

import type * as Reporting from 'plinth:policy/reporting@0.1.2';

import { compareCodePoints, guarded, invalidInput } from './plinth.js';

const U64_MAX = (1n << 64n) - 1n;
const saturating = (value: bigint): bigint => (value > U64_MAX ? U64_MAX : value);

interface Totals {
  startS: bigint;
  endS: bigint;
  gpuSeconds: bigint;
  chargedMicros: bigint;
  records: bigint;
}

function report(records: Reporting.UsageRecord[]): Reporting.ReportRecord[] {
  const tenants = new Map<string, Totals>();
  for (const record of records) {
    if (record.endS < record.startS) {
      throw invalidInput(`job ${record.jobId}: end ${record.endS} before start ${record.startS}`);
    }
    let totals = tenants.get(record.tenant);
    if (totals === undefined) {
      totals = { startS: record.startS, endS: record.endS, gpuSeconds: 0n, chargedMicros: 0n, records: 0n };
      tenants.set(record.tenant, totals);
    }
    if (record.startS < totals.startS) totals.startS = record.startS;
    if (record.endS > totals.endS) totals.endS = record.endS;
    const gpuSeconds = saturating((record.endS - record.startS) * BigInt(record.gpuCount));
    totals.gpuSeconds = saturating(totals.gpuSeconds + gpuSeconds);
    totals.chargedMicros = saturating(totals.chargedMicros + record.chargedMicros);
    totals.records += 1n;
  }
  return [...tenants.entries()]
    .sort(([left], [right]) => compareCodePoints(left, right))
    .map(([tenant, totals]) => ({
      key: tenant,
      periodStartS: totals.startS,
      periodEndS: totals.endS,
      values: [
        ['gpu-seconds', totals.gpuSeconds],
        ['charged-micros', totals.chargedMicros],
        ['records', totals.records],
      ],
    }));
}

export const reporting = { report: guarded(report) } satisfies typeof Reporting;
