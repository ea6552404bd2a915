// Cross-origin isolation for static servers that do not send it (python -m http.server, most file hosts).
// onnxruntime-web's wasm threads need SharedArrayBuffer, which browsers allow only on a page served with
// Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp. This service worker
// re-serves every same-origin response of this folder with those two headers; app.js registers it and reloads
// the page once. Where service workers are unavailable (plain http on a non-localhost address), the page runs
// on one thread and says so. A server that sends the headers itself makes this worker unnecessary.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (new URL(request.url).origin !== self.location.origin) return;
  if (request.cache === "only-if-cached" && request.mode !== "same-origin") return;
  event.respondWith(
    fetch(request).then((response) => {
      if (response.status === 0) return response;
      const headers = new Headers(response.headers);
      headers.set("Cross-Origin-Opener-Policy", "same-origin");
      headers.set("Cross-Origin-Embedder-Policy", "require-corp");
      return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
    }),
  );
});
