// How long the backend keeps an idle keep-alive connection: sends one request straight to
// it (not through nginx) and times from the response to the backend's FIN. The network's
// delay cancels out (both travel the same way), so this is the backend's own idle close
// (~6 s for Node 20's default, which adds 1 s to keepAliveTimeout; other versions differ).
// Prints the median of a few probes in ms; exits 1 if the backend has not closed within
// TIMEOUT_MS (a backend with the fix keeps connections for 620 s).
const net = require('net');
const host = process.env.BACKEND || '10.56.5.6';
const port = Number(process.env.PORT || 8080);
const probes = Number(process.env.PROBES || 3);
const timeoutMs = Number(process.env.TIMEOUT_MS || 15000);

const probe = () => new Promise((resolve) => {
  const sock = net.connect({ host, port });
  let answeredAt = 0;
  const timer = setTimeout(() => { sock.destroy(); resolve(null); }, timeoutMs);
  sock.on('connect', () => sock.write('GET /measure-close HTTP/1.1\r\nHost: backend\r\n\r\n'));
  sock.on('data', () => { answeredAt = Date.now(); });
  sock.on('end', () => {
    clearTimeout(timer);
    sock.destroy();
    resolve(answeredAt ? Date.now() - answeredAt : null);
  });
  sock.on('error', () => { clearTimeout(timer); resolve(null); });
});

Promise.all(Array.from({ length: probes }, probe)).then((times) => {
  const closed = times.filter((t) => t !== null).sort((a, b) => a - b);
  if (closed.length === 0) {
    console.error(`measure-close: the backend kept the connection open for ${timeoutMs} ms`);
    process.exit(1);
  }
  console.log(closed[Math.floor(closed.length / 2)]);
});
