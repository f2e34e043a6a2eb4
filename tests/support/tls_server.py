#!/usr/bin/env python3
"""A minimal HTTPS server for the integration tests: accepts PUT/POST with a Content-Length body,
reads it whole and answers 204. Usage: tls_server.py CERT KEY [CLIENT_CA]: with CLIENT_CA, every
client must present a certificate signed by it (mutual TLS; the handshake fails otherwise).
Prints the port on stdout once listening, serves on 127.0.0.1 until killed, and exits by itself
after 60 s.

The handshake runs in the connection's thread. When it fails, the connection is closed the way
nginx and other careful servers do (a "lingering close"): the TLS alert has been sent, then the
server stops writing and reads what the client still sends before closing. Closing at once with
unread data makes the kernel send a reset, which can destroy the alert before the client reads
it, and the client would see a connection reset instead of the reason."""
import http.server
import socket
import ssl
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self):
        length = int(self.headers.get("Content-Length", "0"))
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    context = None

    def finish_request(self, request, client_address):
        tls = self.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            tls.settimeout(10)
            tls.do_handshake()
        except (ssl.SSLError, OSError):
            lingering_close(socket.socket(fileno=tls.detach()))
            return
        self.RequestHandlerClass(tls, client_address, self)


def lingering_close(sock):
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.5)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def main():
    cert, key = sys.argv[1], sys.argv[2]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if len(sys.argv) > 3:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(sys.argv[3])
    Server.context = context
    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Timer(60, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
