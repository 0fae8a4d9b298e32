// Every call the console makes goes through here, with the API key the user entered (if any).
//
// The key lives in localStorage so a reload keeps it; it is sent as a Bearer token, exactly as the
// OpenAI SDKs send theirs. A 401 from any call tells the page (event "auth-failed") so it can ask for a key.

const KEY_STORAGE = "gpufleet.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

/** An error answer of the gateway: its HTTP status and the message of its OpenAI error body. */
export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }

  toString() {
    return `${this.status}: ${this.message}`;
  }
}

/** fetch() with the key; resolves to the Response when it is 2xx, throws ApiError otherwise. */
export async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    const error = await errorOf(response);
    document.dispatchEvent(new CustomEvent("auth-failed", { detail: error }));
    throw error;
  }
  document.dispatchEvent(new CustomEvent("auth-ok"));
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path) {
  return (await call(path)).json();
}

export async function postJson(path, body = {}, options = {}) {
  return call(path, {
    ...options,
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function errorOf(response) {
  let message = response.statusText || "request failed";
  let code = "";
  try {
    const body = await response.json();
    message = body.error?.message ?? message;
    code = body.error?.code ?? "";
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is.
  }
  return new ApiError(response.status, message, code);
}

/** The `data:` payloads of a server-sent-event stream, as they arrive, up to `[DONE]`. */
export async function* sseData(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    // Normalised on the whole buffer, so a \r\n split across two reads still becomes one \n.
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data) continue; // a comment or keep-alive
      if (data === "[DONE]") return;
      yield data;
    }
  }
}
