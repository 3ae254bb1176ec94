// A Node.js HTTP backend with the default keep-alive timeout (5 s; Node 20 closes idle
// sockets about 1 s later). This is the server behind the load balancer in the incident.
// KEEP_ALIVE_TIMEOUT_MS applies the fix; LOG_REQUESTS=1 logs "req ID RADDR:RPORT URI" per
// request, which lets the end-to-end test tie nginx's request ids to backend connections.
const http = require('http');
const port = Number(process.env.PORT || 8080);
const keepAliveTimeout = process.env.KEEP_ALIVE_TIMEOUT_MS ? Number(process.env.KEEP_ALIVE_TIMEOUT_MS) : undefined;
const logRequests = process.env.LOG_REQUESTS === '1';

const server = http.createServer((req, res) => {
  const id = req.headers['x-request-id'] || '-';
  if (logRequests) console.log(`req ${id} ${req.socket.remoteAddress}:${req.socket.remotePort} ${req.url}`);
  res.setHeader('Content-Type', 'text/plain');
  res.end(`ok ${id}\n`);
});
if (keepAliveTimeout !== undefined) {
  server.keepAliveTimeout = keepAliveTimeout;
  server.headersTimeout = keepAliveTimeout + 1000;  // must stay above keepAliveTimeout
}
server.listen(port, '0.0.0.0', () => console.log(`backend: listening on ${port}, keepAliveTimeout=${server.keepAliveTimeout} ms`));
