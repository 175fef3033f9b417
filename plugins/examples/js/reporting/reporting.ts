// Example reporting plugin in TypeScript: the same report as the Rust example
// (plugins/examples/reporting), checked against its fixtures. Hourly aggregation per
// tenant: each usage interval is split at hour boundaries (UTC); per tenant and hour
// the report carries `gpu-seconds`, `charged-micros` (prorated by time, remainders kept
// so totals are exact), `jobs` (distinct job ids) and `mean-utilisation-pct` (weighted
// by GPU-seconds). For every hour the report covers, a record with key `liveness`
// carries what the host's liveness ledger proves about that hour (WIT 0.1.2
// `liveness.summary`), with the Rust example's values.

import {
  summary as livenessSummary,
  type LivenessSummary,
  type OutageCause,
} from 'plinth:policy/liveness@0.1.2';
import type * as Reporting from 'plinth:policy/reporting@0.1.2';

import { compareCodePoints, guarded, invalidInput } from '../lib/plinth.js';

const HOUR = 3600n;

/** The `liveness` record of one hour (the Rust example's `liveness_record`). */
function livenessRecord(summary: LivenessSummary): Reporting.ReportRecord {
  const period = summary.periodEndS > summary.periodStartS ? summary.periodEndS - summary.periodStartS : 0n;
  const availabilityPpm = period === 0n ? 0n : (summary.uptimeS * 1_000_000n) / period;
  const byCause = new Map<OutageCause, bigint>();
  let longest = 0n;
  for (const outage of summary.outages) {
    byCause.set(outage.cause, (byCause.get(outage.cause) ?? 0n) + outage.lengthS);
    longest = outage.lengthS > longest ? outage.lengthS : longest;
  }
  const values: Array<[string, bigint]> = [
    ['entries', summary.entries],
    ['covered-s', summary.coveredS],
    ['uptime-s', summary.uptimeS],
    ['availability-ppm', availabilityPpm],
    ['drained-gpu-s', summary.drainedGpuS],
    ['outages', BigInt(summary.outages.length)],
    ['longest-outage-s', longest],
  ];
  const causes = [...byCause.keys()].sort(compareCodePoints);
  for (const cause of causes) {
    values.push([`outage-s.${cause}`, byCause.get(cause) ?? 0n]);
  }
  values.push(['head-seq', summary.headSeq]);
  return {
    key: 'liveness',
    periodStartS: summary.periodStartS,
    periodEndS: summary.periodEndS,
    values,
  };
}

interface Bucket {
  tenant: string;
  hourStart: bigint;
  gpuSeconds: bigint;
  chargedMicros: bigint;
  utilisationWeighted: bigint;
  jobs: Set<string>;
}

function report(records: Reporting.UsageRecord[]): Reporting.ReportRecord[] {
  // Keyed by tenant and hour; a Map of Maps keeps the tenant string exact.
  const buckets = new Map<string, Map<bigint, Bucket>>();
  const bucket = (tenant: string, hourStart: bigint): Bucket => {
    let hours = buckets.get(tenant);
    if (hours === undefined) {
      hours = new Map();
      buckets.set(tenant, hours);
    }
    let found = hours.get(hourStart);
    if (found === undefined) {
      found = {
        tenant,
        hourStart,
        gpuSeconds: 0n,
        chargedMicros: 0n,
        utilisationWeighted: 0n,
        jobs: new Set(),
      };
      hours.set(hourStart, found);
    }
    return found;
  };
  for (const record of records) {
    if (record.endS < record.startS) {
      throw invalidInput(
        `job ${record.jobId}: end ${record.endS} before start ${record.startS}`,
      );
    }
    const duration = record.endS - record.startS;
    let chargedLeft = record.chargedMicros;
    let cursor = record.startS;
    while (cursor < record.endS || (duration === 0n && cursor === record.startS)) {
      const hourStart = cursor - (cursor % HOUR);
      const pieceEnd = hourStart + HOUR < record.endS ? hourStart + HOUR : record.endS;
      const piece = pieceEnd - cursor;
      const isLast = pieceEnd >= record.endS;
      let charged = chargedLeft;
      if (!isLast && duration !== 0n) {
        const share = (record.chargedMicros * piece) / duration;
        charged = share < chargedLeft ? share : chargedLeft;
      }
      chargedLeft -= charged;
      const gpuSeconds = piece * BigInt(record.gpuCount);
      const target = bucket(record.tenant, hourStart);
      target.gpuSeconds += gpuSeconds;
      target.chargedMicros += charged;
      target.utilisationWeighted += gpuSeconds * BigInt(record.utilisationPct);
      target.jobs.add(record.jobId);
      if (isLast) {
        break;
      }
      cursor = pieceEnd;
    }
  }
  const all = [...buckets.values()].flatMap((hours) => [...hours.values()]);
  all.sort(
    (left, right) =>
      compareCodePoints(left.tenant, right.tenant) ||
      (left.hourStart < right.hourStart ? -1 : left.hourStart > right.hourStart ? 1 : 0),
  );
  const hours = [...new Set(all.map((entry) => entry.hourStart))].sort((left, right) =>
    left < right ? -1 : left > right ? 1 : 0,
  );
  const report: Reporting.ReportRecord[] = all.map((entry) => ({
    key: entry.tenant,
    periodStartS: entry.hourStart,
    periodEndS: entry.hourStart + HOUR,
    values: [
      ['gpu-seconds', entry.gpuSeconds],
      ['charged-micros', entry.chargedMicros],
      ['jobs', BigInt(entry.jobs.size)],
      ['mean-utilisation-pct', entry.gpuSeconds === 0n ? 0n : entry.utilisationWeighted / entry.gpuSeconds],
    ],
  }));
  for (const hourStart of hours) {
    const summary = livenessSummary(hourStart, hourStart + HOUR);
    if (summary !== undefined) {
      report.push(livenessRecord(summary));
    }
  }
  return report;
}

export const reporting = { report: guarded(report) } satisfies typeof Reporting;
