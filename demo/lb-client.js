// Plays the load balancer: keeps upstream connections open and reuses each after an idle
// gap. Gaps straddle the backend's idle close (~6 s for Node's default), so some requests
// arrive on a connection the backend has just closed and are answered with a TCP RST --
// what a real LB turns into an HTTP 502.
const net = require('net');
const host = process.env.BACKEND || '10.56.5.6';
const port = Number(process.env.PORT || 8080);
const connections = Number(process.env.CONNECTIONS || 12);
const minGapMs = Number(process.env.MIN_GAP_MS || 4500);
const maxGapMs = Number(process.env.MAX_GAP_MS || 7500);

let ok = 0, reset = 0, done = 0;
const request = (id) => `GET / HTTP/1.1\r\nHost: backend\r\nX-Request-Id: ${id}\r\n\r\n`;

function run(index) {
  const gap = minGapMs + ((maxGapMs - minGapMs) * index) / Math.max(1, connections - 1);
  const sock = net.connect({ host, port, allowHalfOpen: true });
  let phase = 0;
  const finish = (what) => {
    if (phase === 3) return;
    phase = 3;
    if (what === 'ok') ok++; else reset++;
    console.log(`lb: connection ${index} after ${(gap / 1000).toFixed(2)} s idle: ${what}`);
    sock.destroy();
    if (++done === connections) {
      console.log(`lb: ${ok} answered, ${reset} reset (a load balancer returns 502 for these)`);
    }
  };
  sock.on('connect', () => sock.write(request(`${index}-a`)));
  sock.on('data', () => {
    if (phase === 0) {
      phase = 1;
      setTimeout(() => {
        phase = 2;
        sock.write(request(`${index}-b`));
        // a connection the backend closed answers with a RST, which Node may not surface
        // on a half-closed socket: no answer within a second counts as reset
        setTimeout(() => finish('RESET'), 1000);
      }, gap);
    } else if (phase === 2) {
      finish('ok');
    }
  });
  sock.on('error', () => finish('RESET'));
  sock.on('end', () => { if (phase === 2) finish('RESET (closed)'); });
  sock.on('close', () => { if (phase === 2) finish('RESET'); });
}
for (let i = 0; i < connections; i++) run(i);
