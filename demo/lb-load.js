// The load behind the load balancer: LANES clients, each sending a request through nginx
// to its own upstream pool (/lane/N), then waiting its idle gap before the next, ROUNDS
// times. Gaps spread from MIN_GAP_MS to MAX_GAP_MS, straddling the backend's idle close
// (~6 s for Node's default), so some requests reach a pooled connection the backend is
// closing -- and nginx, like a cloud LB, answers them with 502.
const http = require('http');
const target = new URL(process.env.TARGET || 'http://130.211.0.143:8081');
const rounds = Number(process.env.ROUNDS || 3);
const lanes = Number(process.env.LANES || 32);
const minGapMs = Number(process.env.MIN_GAP_MS || 5800);
const maxGapMs = Number(process.env.MAX_GAP_MS || 6100);

const counts = {};
const get = (path) => new Promise((resolve) => {
  const req = http.get({ host: target.hostname, port: target.port, path, agent: false }, (res) => {
    res.resume();
    res.on('end', () => resolve(res.statusCode));
  });
  req.setTimeout(10000, () => req.destroy(new Error('timeout')));
  req.on('error', (err) => resolve(err.code || err.message));
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function lane(index) {
  const gap = minGapMs + ((maxGapMs - minGapMs) * index) / Math.max(1, lanes - 1);
  await sleep(index * 7);  // spread the first requests a little
  for (let round = 0; round <= rounds; ++round) {
    if (round > 0) await sleep(gap);
    const status = await get(`/lane/${index}`);
    counts[status] = (counts[status] || 0) + 1;
    if (round > 0 && status !== 200)
      console.log(`lb-load: lane ${index} after ${(gap / 1000).toFixed(3)} s idle: HTTP ${status}`);
  }
}

Promise.all(Array.from({ length: lanes }, (_, i) => lane(i))).then(() => {
  const summary = Object.entries(counts).map(([status, n]) => `${n} x ${status}`).join(', ');
  console.log(`lb-load: ${summary}`);
});
