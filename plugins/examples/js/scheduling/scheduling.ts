// Example scheduling plugin in TypeScript: the same policy as the Rust example
// (plugins/examples/scheduling), checked against its fixtures. Best-fit bin-packing that
// keeps a job's GPUs inside one NVLink domain (else one NUMA node), never hands out
// drained or leased GPUs, defers when the GPUs exist but are busy, and rejects what
// this host can never run. Tightly coupled work goes only where the network is fast:
// with `coupled.max-rtt-us` set, a request of at least `coupled.min-gpus` GPUs is
// rejected unless the host's measured round trip (p99) to some configured peer is within
// the limit (WIT 0.1.2 `network.peers`); admitted, it logs the peers fastest first.
//
// Operator configuration (all optional): `allow-split` (`true` lets a job span domains
// when no single domain fits), `defer-s` (retry hint, default 60), `coupled.max-rtt-us`
// (default 0: no network check), `coupled.min-gpus` (default 8).

import { peers as networkPeers, type PeerQuality } from 'plinth:policy/network@0.1.2';
import type * as Scheduling from 'plinth:policy/scheduling@0.1.2';
import type { Gpu, HostState, JobRequest } from 'plinth:policy/types@0.1.2';

import {
  compareCodePoints,
  configBool,
  configUnsigned,
  containsIgnoreAsciiCase,
  debug,
  guarded,
  info,
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

function compareBigints(left: bigint, right: bigint): number {
  return left < right ? -1 : left > right ? 1 : 0;
}

/**
 * For a tightly coupled request: the reason to reject it when no measured peer is within
 * `maxRttUs` (p99), else the peers that are, fastest first (as the Rust example).
 */
function coupledPeers(req: JobRequest, maxRttUs: bigint): PeerQuality[] | string {
  const peers = networkPeers();
  peers.sort(
    (left, right) =>
      compareBigints(left.rttP99Us, right.rttP99Us) ||
      compareBigints(left.rttMedianUs, right.rttMedianUs) ||
      compareCodePoints(left.peer, right.peer),
  );
  const fastest = peers[0];
  if (fastest === undefined) {
    return `tightly coupled request (${req.gpuCount} gpus): no peer's network quality is measured`;
  }
  if (fastest.rttP99Us > maxRttUs) {
    return `tightly coupled request (${req.gpuCount} gpus): lowest measured rtt p99 is ${fastest.rttP99Us} us (peer ${fastest.peer}), above coupled.max-rtt-us ${maxRttUs}`;
  }
  return peers.filter((peer) => peer.rttP99Us <= maxRttUs);
}

function schedule(req: JobRequest, state: HostState): Scheduling.ScheduleDecision {
  const allowSplit = configBool('allow-split', false);
  const deferS = Number(configUnsigned('defer-s', 60n, 32));
  if (req.gpuCount === 0) {
    // A CPU-only job needs no GPU: admit it without one.
    return { tag: 'admit', val: new Uint32Array(0) };
  }
  const wanted = req.gpuCount;
  const usable = state.gpus.filter((gpu) => matches(req, gpu));
  if (usable.length < wanted) {
    return {
      tag: 'reject',
      val: `host has ${usable.length} usable gpus for this request, ${wanted} wanted`,
    };
  }
  const maxRttUs = configUnsigned('coupled.max-rtt-us', 0n);
  const minGpus = Number(configUnsigned('coupled.min-gpus', 8n, 32));
  if (maxRttUs > 0n && req.gpuCount >= minGpus) {
    const coupled = coupledPeers(req, maxRttUs);
    if (typeof coupled === 'string') {
      return { tag: 'reject', val: coupled };
    }
    const order = coupled.map((peer) => `${peer.peer} (${peer.rttP99Us} us)`).join(', ');
    info(`${req.requestId}: tightly coupled; peers by rtt p99: ${order}`);
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
