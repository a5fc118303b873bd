// Open model: a constant arrival rate (k6's constant-arrival-rate executor), then the summary as
// JSON. Driven by bench/loadgen.py through environment variables; the first WARMUP seconds run
// as their own scenario and are left out of the measured ("main") figures.
import http from 'k6/http';

const rate = Number(__ENV.RATE);
const warmup = Number(__ENV.WARMUP);
const duration = Number(__ENV.DURATION);
const preAllocated = Number(__ENV.PREALLOCATED_VUS);
const maxVUs = Number(__ENV.MAX_VUS);
const body = __ENV.BODY;
const params = {
  headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${__ENV.KEY}` },
  timeout: __ENV.TIMEOUT || '10s',
};

function scenario(start, seconds, grace) {
  return {
    executor: 'constant-arrival-rate',
    rate: rate,
    timeUnit: '1s',
    duration: `${seconds}s`,
    startTime: `${start}s`,
    preAllocatedVUs: preAllocated,
    maxVUs: maxVUs,
    gracefulStop: grace,
  };
}

const scenarios = { main: scenario(warmup, duration, '10s') };
if (warmup > 0) {
  scenarios.warm = scenario(0, warmup, '0s');
}

export const options = {
  discardResponseBodies: true,
  scenarios: scenarios,
  // Thresholds that always pass: they make k6 keep the per-scenario sub-metrics in the summary.
  thresholds: {
    'http_req_duration{scenario:main}': ['max>=0'],
    'http_req_failed{scenario:main}': ['rate>=0'],
    'http_reqs{scenario:main}': ['count>=0'],
    'dropped_iterations{scenario:main}': ['count>=0'],
  },
  summaryTrendStats: ['min', 'med', 'avg', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
};

export default function () {
  http.post(__ENV.URL, body, params);
}

export function handleSummary(data) {
  return { [__ENV.SUMMARY]: JSON.stringify(data) };
}
