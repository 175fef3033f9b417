// Example scheduling plugin in TypeScript: the same policy as the Rust example
// (plugins/examples/scheduling), checked against its fixtures. Best-fit bin-packing that
// keeps a job's GPUs inside one NVLink domain (else one NUMA node), never hands out
// drained or leased GPUs, defers when the GPUs exist but are busy, and rejects what
// this host can never run.
//
// Operator configuration (all optional): `allow-split` (`true` lets a job span domains
// when no single domain fits), `defer-s` (retry hint, default 60).

import type * as Scheduling from 'plinth:policy/scheduling@0.1.1';
import type { Gpu, HostState, JobRequest } from 'plinth:policy/types@0.1.1';

import {
  configBool,
  configUnsigned,
  containsIgnoreAsciiCase,
  debug,
  guarded,
  invalidInput,
} from '../lib/plinth.js';

function matches(req: JobRequest, gpu: Gpu): boolean {
  if (gpu.drained || gpu.memoryMib < req.minGpuMemoryMib) {
    return false;
  }
  return req.gpuModel === undefined || containsIgnoreAsciiCase(gpu.model, req.gpuModel);
}

/** GPU indices grouped by a key, groups in ascending key order (as a Rust BTreeMap). */
function groupBy(gpus: Gpu[], key: (gpu: Gpu) => number): Array<[number, number[]]> {
  const groups = new Map<number, number[]>();
  for (const gpu of gpus) {
    const members = groups.get(key(gpu));
    if (members === undefined) {
      groups.set(key(gpu), [gpu.index]);
    } else {
      members.push(gpu.index);
    }
  }
  return [...groups.entries()].sort(([left], [right]) => left - right);
}

/**
 * Best fit: among groups with at least `wanted` free GPUs, the one with the fewest free
 * GPUs (ties broken by lowest key), so that large domains stay whole for large jobs.
 */
function bestFit(groups: Array<[number, number[]]>, wanted: number): number[] | undefined {
  let best: number[] | undefined;
  for (const [, members] of groups) {
    if (members.length >= wanted && (best === undefined || members.length < best.length)) {
      best = members;
    }
  }
  return best?.slice(0, wanted);
}

function schedule(req: JobRequest, state: HostState): Scheduling.ScheduleDecision {
  const allowSplit = configBool('allow-split', false);
  const deferS = Number(configUnsigned('defer-s', 60n, 32));
  if (req.gpuCount === 0) {
    throw invalidInput('gpu-count is 0');
  }
  const wanted = req.gpuCount;
  const usable = state.gpus.filter((gpu) => matches(req, gpu));
  if (usable.length < wanted) {
    return {
      tag: 'reject',
      val: `host has ${usable.length} usable gpus for this request, ${wanted} wanted`,
    };
  }
  const free = usable.filter((gpu) => !gpu.allocated);
  const byNvlink = groupBy(free, (gpu) => gpu.nvlinkDomain);
  const byNuma = groupBy(free, (gpu) => gpu.numaNode);
  const chosen = bestFit(byNvlink, wanted) ?? bestFit(byNuma, wanted);
  if (chosen !== undefined) {
    debug(`${req.requestId} admitted on [${chosen.join(', ')}]`);
    return { tag: 'admit', val: Uint32Array.from(chosen) };
  }
  if (allowSplit && free.length >= wanted) {
    // Take whole domains, largest first (a stable sort, as Rust's), to span as few as
    // possible.
    const domains = byNvlink.map(([, members]) => members);
    domains.sort((left, right) => right.length - left.length);
    const split = domains
      .flat()
      .slice(0, wanted)
      .sort((left, right) => left - right);
    return { tag: 'admit', val: Uint32Array.from(split) };
  }
  return { tag: 'defer', val: deferS };
}

export const scheduling = { schedule: guarded(schedule) } satisfies typeof Scheduling;
