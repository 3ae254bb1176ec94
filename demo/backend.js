// A Node.js HTTP backend with the default keep-alive timeout (5 s; Node 20 closes idle
// sockets about 1 s later). This is the server behind the load balancer in the incident.
const http = require('http');
const port = Number(process.env.PORT || 8080);
const keepAliveTimeout = process.env.KEEP_ALIVE_TIMEOUT_MS ? Number(process.env.KEEP_ALIVE_TIMEOUT_MS) : undefined;

const server = http.createServer((req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(`ok ${req.headers['x-request-id'] || '-'}\n`);
});
if (keepAliveTimeout !== undefined) {
  server.keepAliveTimeout = keepAliveTimeout;
  server.headersTimeout = keepAliveTimeout + 1000;
}
server.listen(port, '0.0.0.0', () => console.log(`backend: listening on ${port}, keepAliveTimeout=${server.keepAliveTimeout} ms`));
