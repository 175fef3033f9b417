// {{name}}: a scheduling policy for plinth, in TypeScript. First fit: admit the job on
// the first free GPUs (by index) of the wanted model and memory; defer (config
// `defer-s`, default 60) when such GPUs exist but are busy; reject what this host can
// never run. Drained GPUs are never handed out.

import type * as Scheduling from 'plinth:policy/scheduling@0.1.2';
import type { Gpu, HostState, JobRequest } from 'plinth:policy/types@0.1.2';

import {
  configUnsigned,
  containsIgnoreAsciiCase,
  debug,
  guarded,
  invalidInput,
} from './plinth.js';

function usable(req: JobRequest, gpu: Gpu): boolean {
  return (
    !gpu.drained &&
    gpu.memoryMib >= req.minGpuMemoryMib &&
    (req.gpuModel === undefined || containsIgnoreAsciiCase(gpu.model, req.gpuModel))
  );
}

function schedule(req: JobRequest, state: HostState): Scheduling.ScheduleDecision {
  const deferS = Number(configUnsigned('defer-s', 60n, 32));
  if (req.gpuCount === 0) {
    throw invalidInput('gpu-count is 0');
  }
  const wanted = req.gpuCount;
  const candidates = state.gpus.filter((gpu) => usable(req, gpu));
  if (candidates.length < wanted) {
    return { tag: 'reject', val: `host has ${candidates.length} usable gpus, ${wanted} wanted` };
  }
  const free = candidates
    .filter((gpu) => !gpu.allocated)
    .map((gpu) => gpu.index)
    .slice(0, wanted);
  if (free.length < wanted) {
    debug(`${req.requestId}: busy, deferring`);
    return { tag: 'defer', val: deferS };
  }
  return { tag: 'admit', val: Uint32Array.from(free) };
}

export const scheduling = { schedule: guarded(schedule) } satisfies typeof Scheduling;
