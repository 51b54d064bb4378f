// The chat page: keeps the conversation, streams replies from /v1/chat/completions (SSE).
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];          // {role, content} turns of this conversation
let controller = null;       // aborts the reply being streamed

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function bubble(role, text) {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = text;
  $("history").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    const picker = $("model");
    const chosen = picker.value;
    picker.replaceChildren(...body.data.map((m) => new Option(m.id, m.id)));
    if (chosen) picker.value = chosen;
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = `cannot list models: ${e.message}`;
  }
}

function request() {
  const persona = $("persona").value.trim();
  const messages = (persona ? [{ role: "system", content: persona }] : []).concat(history);
  const body = { model: $("model").value, messages, stream: true,
                 temperature: Number($("temperature").value), top_p: Number($("top-p").value) };
  const max = Number($("max-tokens").value);
  if (max > 0) body.max_tokens = max;
  return body;
}

// Reads server-sent events; calls onData with each parsed `data:` payload until [DONE].
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  bubble("user", text);
  const reply = bubble("assistant", "");
  reply.classList.add("streaming");
  controller = new AbortController();
  busy(true);
  $("status").textContent = "";
  let answer = "";
  try {
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(),
      body: JSON.stringify(request()), signal: controller.signal });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : r.statusText);
    }
    await readEvents(r, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) {
          answer += choice.delta.content;
          reply.textContent = answer;
        }
      }
    });
  } catch (e) {
    if (e.name === "AbortError") {
      $("status").textContent = "stopped";
    } else {
      reply.classList.add("error");
      reply.textContent = answer + (answer ? "\n" : "") + `error: ${e.message}`;
    }
  } finally {
    reply.classList.remove("streaming");
    history.push({ role: "assistant", content: answer });
    controller = null;
    busy(false);
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || controller) return;
  $("message").value = "";
  send(text);
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  history.length = 0;
  $("history").replaceChildren();
  $("status").textContent = "new chat";
  $("message").focus();
});
for (const [id, out] of [["temperature", "temperature-value"], ["top-p", "top-p-value"]]) {
  $(id).addEventListener("input", () => { $(out).textContent = $(id).value; });
}
$("api-key").addEventListener("change", loadModels);
loadModels();
