package dev.privtune.core.net;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;
import dev.privtune.core.io.AtomicFiles;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/** A scripted HTTP server on loopback: answers requests with queued responses and records what it received. */
final class TestServer implements AutoCloseable {
    /** One received request. */
    static final class Request {
        final String method;
        final String path;
        final Map<String, String> headers;
        final byte[] body;

        Request(String method, String path, Map<String, String> headers, byte[] body) {
            this.method = method;
            this.path = path;
            this.headers = headers;
            this.body = body;
        }

        String header(String name) {
            return headers.get(name.toLowerCase(Locale.ROOT));
        }
    }

    /** A scripted response. */
    static final class Reply {
        final int status;
        final Map<String, String> headers = new LinkedHashMap<String, String>();
        final byte[] body;

        Reply(int status, String body) {
            this(status, body.getBytes(StandardCharsets.UTF_8));
        }

        Reply(int status, byte[] body) {
            this.status = status;
            this.body = body;
        }

        Reply header(String name, String value) {
            headers.put(name, value);
            return this;
        }
    }

    private final HttpServer server;
    private final LinkedList<Reply> script = new LinkedList<Reply>();
    final List<Request> requests = Collections.synchronizedList(new ArrayList<Request>());

    TestServer() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/", new HttpHandler() {
            @Override
            public void handle(HttpExchange exchange) throws IOException {
                Map<String, String> headers = new LinkedHashMap<String, String>();
                for (Map.Entry<String, List<String>> h : exchange.getRequestHeaders().entrySet()) {
                    headers.put(h.getKey().toLowerCase(Locale.ROOT), h.getValue().get(0));
                }
                byte[] body = AtomicFiles.readAll(exchange.getRequestBody());
                requests.add(new Request(exchange.getRequestMethod(), exchange.getRequestURI().getRawPath(), headers, body));
                Reply reply;
                synchronized (script) {
                    reply = script.isEmpty() ? new Reply(500, "{\"detail\":\"script exhausted\"}") : script.removeFirst();
                }
                for (Map.Entry<String, String> h : reply.headers.entrySet()) {
                    exchange.getResponseHeaders().add(h.getKey(), h.getValue());
                }
                exchange.sendResponseHeaders(reply.status, reply.body.length == 0 ? -1 : reply.body.length);
                OutputStream out = exchange.getResponseBody();
                out.write(reply.body);
                out.close();
            }
        });
        server.start();
    }

    TestServer then(Reply reply) {
        synchronized (script) {
            script.add(reply);
        }
        return this;
    }

    String url() {
        return "http://127.0.0.1:" + server.getAddress().getPort();
    }

    @Override
    public void close() {
        server.stop(0);
    }
}
