// Drives the chat page at GET / in headless Chromium (Debian's, through puppeteer-core; nothing is downloaded) and
// checks what a user sees: streamed multi-turn answers with their timings, the settings sent with each request,
// markdown rendered as elements and model-written markup shown as text, readable errors, the Stop button, and the
// API-key prompt. Run by tests/server/chat_page_test.cpp; by hand against any running `ernie serve`:
//
//   node chat_page.mjs --url http://127.0.0.1:8080 [--key-url URL --key KEY] [--screenshot FILE]
//
// --control DIR (the C++ test's): to hold generation for the Stop check, the script prints "control: NAME" and
// waits for DIR/NAME to appear; NAME is gate-close (hold the scheduler) or gate-open.
// Exits 0 after printing "chat page: ok ...", or 1 with the failed check on stderr.
import { existsSync } from "node:fs";
import puppeteer from "puppeteer-core";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
if (!args.url) {
  throw new Error("usage: node chat_page.mjs --url URL [--key-url URL --key KEY] [--control DIR] [--screenshot FILE]");
}
const WAIT = { timeout: 15_000 };
// A hung browser must not hang the test: give up well before the C++ side's own limit.
setTimeout(() => { console.error("chat page: timed out"); process.exit(1); }, 50_000).unref();

function check(condition, what, detail) {
  if (!condition) throw new Error(`check failed: ${what}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
}

async function control(name) {
  console.log(`control: ${name}`);
  const deadline = Date.now() + 10_000;
  while (!existsSync(`${args.control}/${name}`)) {
    check(Date.now() < deadline, `the test answered control: ${name}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// An SSE body as the server streams it, for answers the test writes itself (a random-weight model's cannot be
// chosen): the role, the content in pieces, the finish reason, usage, [DONE].
function sse(pieces, { error } = {}) {
  const chunk = (delta, finish) => ({ id: "chatcmpl-test", object: "chat.completion.chunk", created: 0, model: "canned",
                                      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] });
  const events = [chunk({ role: "assistant", content: "" }, null),
                  ...pieces.map((content) => chunk({ content }, null))];
  if (error) events.push({ error });
  else events.push(chunk({}, "stop"), { ...chunk({}, null), choices: [], usage: { completion_tokens: pieces.length } });
  return events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join("") + "data: [DONE]\n\n";
}

// Each page's console errors and requests, labelled with the step they happened in.
function watch(page, log) {
  page.on("console", (m) => { if (m.type() === "error") log.errors.push({ step: log.step, text: m.text() }); });
  page.on("pageerror", (e) => log.errors.push({ step: log.step, text: `uncaught: ${e.message}` }));
  page.on("request", (r) => {
    log.urls.push(r.url());
    if (r.method() === "POST" && r.url().endsWith("/v1/chat/completions")) {
      log.chats.push({ body: JSON.parse(r.postData()), headers: r.headers(), request: r });
    }
  });
  page.on("requestfailed", (r) => log.failed.push({ url: r.url(), error: r.failure()?.errorText }));
}

// Sends `text` as the user would (typing, Enter) and waits for the answer to stop streaming.
async function ask(page, text) {
  const before = await page.$$eval("#messages .msg.assistant", (list) => list.length);
  await page.type("#prompt", text);
  await page.keyboard.press("Enter");
  await page.waitForFunction((n) => {
    const list = document.querySelectorAll("#messages .msg.assistant");
    return list.length === n + 1 && list[n].dataset.state !== "streaming";
  }, WAIT, before);
  return lastAnswer(page);
}

function lastAnswer(page) {
  return page.$eval("#messages .msg.assistant:last-child", (m) => ({
    state: m.dataset.state, text: m.querySelector(".body").innerText.trim(),
    stats: m.querySelector(".stats").textContent, error: m.querySelector(".error").textContent,
  }));
}

async function setField(page, selector, value) {
  await page.$eval(selector, (e) => { e.value = ""; });
  await page.type(selector, value);
}

const STATS = /^TTFT \d+ ms · \d+ tokens · \d+(\.\d)? tok\/s$/;

// The page against a server without a key: everything but the key prompt.
async function openServer(browser, log) {
  const origin = new URL(args.url).origin;
  await browser.defaultBrowserContext().overridePermissions(origin, ["clipboard-read", "clipboard-write"]);
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 700 });
  watch(page, log);

  log.step = "load";
  const response = await page.goto(args.url, { waitUntil: "load", ...WAIT });
  check(response.status() === 200, "GET / answers 200", response.status());
  check(/default-src 'none'/.test(response.headers()["content-security-policy"]), "the page has a strict CSP");
  await page.waitForSelector('body[data-ready="true"]', WAIT);
  const models = (await (await fetch(`${args.url}/v1/models`)).json()).data.map((m) => m.id);
  const options = await page.$$eval("#model option", (list) => list.map((o) => o.value));
  check(JSON.stringify(options) === JSON.stringify(models), "the model picker lists /v1/models", { options, models });

  log.step = "chat";
  await page.click("#toggle-settings");
  await page.type("#system", "You are a helpful assistant.");
  await page.type("#temperature", "0");
  await page.type("#top-p", "0.9");
  await page.type("#max-tokens", "16");
  await page.type("#stop", "NEVER-STOP-HERE");
  const first = await ask(page, "Hello! Who are you?");
  check(first.state === "done" && first.text.length > 0, "a streamed answer appears", first);
  check(STATS.test(first.stats), "the answer shows TTFT and tokens/s", first.stats);
  const sent = log.chats[0].body;
  check(sent.stream === true && sent.stream_options?.include_usage === true, "the request streams with usage", sent);
  check(sent.model === models[0] && sent.temperature === 0 && sent.top_p === 0.9 && sent.max_tokens === 16 &&
        JSON.stringify(sent.stop) === '["NEVER-STOP-HERE"]', "the settings go with the request", sent);
  check(JSON.stringify(sent.messages) === JSON.stringify([
    { role: "system", content: "You are a helpful assistant." }, { role: "user", content: "Hello! Who are you?" },
  ]), "the first request's messages", sent.messages);

  const second = await ask(page, "Tell me more.");
  check(second.state === "done" && second.text.length > 0, "the second answer appears", second);
  const turns = log.chats[1].body.messages;
  check(turns.map((m) => m.role).join() === "system,user,assistant,user" && turns[3].content === "Tell me more.",
        "the second request carries the first turn", turns);

  log.step = "copy";  // the first answer's text as the server sent it, which the second request carried back
  await page.click("#messages .msg.assistant .copy");
  await page.waitForFunction(() => document.querySelector("#messages .msg.assistant .copy").textContent === "Copied",
                             WAIT);
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === turns[2].content, "Copy puts the answer on the clipboard", { copied, sent: turns[2].content });

  log.step = "markdown";
  // Canned answers for the next two requests to the chat route; everything else goes to the server.
  const canned = [];
  const intercept = (r) => {
    if (r.method() === "POST" && r.url().endsWith("/v1/chat/completions") && canned.length) {
      r.respond({ status: 200, contentType: "text/event-stream", body: canned.shift() });
    } else {
      r.continue();
    }
  };
  await page.setRequestInterception(true);
  page.on("request", intercept);
  const payload = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">';
  canned.push(sse(["## Markdown, safely\n\nThis is **bold**, *italic* and `inline <b>code</b>`; a ", "[link](https://",
                   "example.com/docs) and a [bad one](javascript:window.__xss=3).\n\n- first\n- second\n\n1. one\n",
                   "2. two\n\n```cpp\nint main() { return 0; } // <em>not html</em>\n```\n\nMarkup stays text: ",
                   payload]));
  const md = await ask(page, "Show me some markdown.");
  check(md.state === "done" && STATS.test(md.stats), "the canned answer finishes", md);
  const dom = await page.$eval("#messages .msg.assistant:last-child .body", (body) => ({
    xss: window.__xss, live: body.querySelectorAll("script, img, iframe, object, embed, svg, style, b, pre em").length,
    text: body.textContent, h2: body.querySelector("h2")?.textContent,
    strong: body.querySelector("strong")?.textContent,
    em: body.querySelector("p em")?.textContent, code: body.querySelector("p code")?.textContent,
    links: [...body.querySelectorAll("a")].map((a) => ({ href: a.getAttribute("href"), rel: a.rel,
                                                         text: a.textContent })),
    ul: [...body.querySelectorAll("ul > li")].map((li) => li.textContent),
    ol: [...body.querySelectorAll("ol > li")].map((li) => li.textContent),
    pre: body.querySelector("pre > code")?.textContent, lang: body.querySelector("pre > code")?.dataset.lang,
  }));
  check(dom.xss === undefined && dom.live === 0, "model-written markup never becomes elements or runs", dom);
  check(dom.text.includes(payload), "model-written markup is shown literally", dom.text);
  check(dom.h2 === "Markdown, safely" && dom.strong === "bold" && dom.em === "italic" &&
        dom.code === "inline <b>code</b>",
        "headings, bold, italic and inline code render", dom);
  check(dom.links.length === 1 && dom.links[0].href === "https://example.com/docs" &&
        dom.links[0].rel.includes("noopener"),
        "only the http(s) link is a link, with rel=noopener", dom.links);
  check(dom.text.includes("[bad one](javascript:window.__xss=3)"), "a javascript: link stays text", dom.text);
  check(dom.ul.join() === "first,second" && dom.ol.join() === "one,two", "lists render", dom);
  check(dom.pre === "int main() { return 0; } // <em>not html</em>" && dom.lang === "cpp",
        "the code block is <pre><code>", dom);
  if (args.screenshot) {  // the conversation, with the settings folded away
    await page.click("#toggle-settings");
    await page.screenshot({ path: args.screenshot });
    await page.click("#toggle-settings");
  }

  log.step = "stream error";
  canned.push(sse(["partial "],
                  { error: { message: "the request was cancelled: the server is shutting down", type: "cancelled" } }));
  const broken = await ask(page, "This one fails in the middle.");
  check(broken.state === "error" && broken.error.includes("the request was cancelled"),
        "an error event inside the stream shows as a message", broken);
  page.off("request", intercept);
  await page.setRequestInterception(false);

  log.step = "http error";  // the browser logs the 400 itself: expected here
  await setField(page, "#max-tokens", "1000000");
  const refused = await ask(page, "Too long an answer, please.");
  check(refused.state === "error" && /^400 .+: .{10,}/.test(refused.error), "a 400 shows the server's message",
        refused);
  await setField(page, "#max-tokens", "16");

  if (args.control) {
    log.step = "stop";
    await control("gate-close");  // the scheduler now holds every answer after its first step
    const responded = new Promise((resolve) => page.on("response", (r) => {
      if (r.url().endsWith("/v1/chat/completions")) resolve();
    }));
    const before = log.chats.length;
    await page.type("#prompt", "An answer to stop.");
    await page.keyboard.press("Enter");
    await responded;  // the stream has begun (its headers and role event arrived)
    check(await page.$eval("#stop-button", (b) => !b.hidden), "Stop shows while streaming");
    check((await lastAnswer(page)).state === "streaming", "the answer is streaming");
    await page.click("#stop-button");
    await page.waitForFunction(
      () => document.querySelector("#messages .msg.assistant:last-child").dataset.state !== "streaming", WAIT);
    const stopped = await lastAnswer(page);
    check(stopped.state === "stopped" && stopped.error === "Stopped.", "Stop ends the answer", stopped);
    check(await page.$eval("#send", (b) => !b.disabled), "Send is enabled again");
    check(log.failed.some((f) => f.url.endsWith("/v1/chat/completions") && /ABORTED/.test(f.error)),
          "Stop aborts the request", log.failed);
    // Failed turns (the stream error, the 400) are not kept; the earlier three are.
    check(log.chats[before].body.messages.length === 8, "failed turns leave the conversation",
          log.chats[before].body.messages);
    await control("gate-open");
    const after = await ask(page, "And now?");
    check(after.state === "done", "the page answers again after Stop", after);
  }
  await page.close();
}

// The page against a server with --api-key: the key prompt, then a normal chat with the key as the Bearer header.
async function keyedServer(browser, log) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  watch(page, log);
  log.step = "key";  // the 401s are expected: the browser logs them itself
  let unauthorized = 0;
  page.on("response", (r) => { if (r.url().endsWith("/v1/models") && r.status() === 401) unauthorized++; });
  await page.goto(args["key-url"], { waitUntil: "load", ...WAIT });
  await page.waitForSelector("#key-panel:not([hidden]) #api-key", { visible: true, ...WAIT });
  check(unauthorized === 1, "the page asks for the key after a 401 from /v1/models", unauthorized);
  check(await page.$eval("#api-key", (e) => e.type) === "password", "the key field is a password field");
  await page.type("#api-key", "not-the-key");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#key-error:not([hidden])", WAIT);
  await page.type("#api-key", args.key);
  await page.keyboard.press("Enter");
  await page.waitForSelector('body[data-ready="true"]', WAIT);
  check(await page.$eval("#key-panel", (e) => e.hidden), "the key prompt closes");
  await page.click("#toggle-settings");
  await page.type("#max-tokens", "8");
  const answer = await ask(page, "Hello with a key.");
  check(answer.state === "done" && answer.text.length > 0 && STATS.test(answer.stats), "a keyed chat answers", answer);
  const chat = log.chats[log.chats.length - 1];
  check(chat.headers.authorization === `Bearer ${args.key}`, "the key goes as the Bearer header", chat.headers);
  const stored = await page.evaluate(() => ({
    cookie: document.cookie,
    storage: [localStorage, sessionStorage].flatMap((s) => Object.keys(s).map((k) => `${k}=${s.getItem(k)}`))
      .join("\n"),
    field: document.querySelector("#api-key").value,
  }));
  check(!stored.cookie.includes(args.key) && !stored.storage.includes(args.key) && stored.field === "" &&
        stored.cookie === "", "the key is kept in no storage, cookie or field", stored);
  await context.close();
}

const browser = await puppeteer.launch({
  executablePath: args.chromium || "/usr/bin/chromium",
  // --no-sandbox: tests may run as root, where Chromium refuses its sandbox. The rest keep it from reaching out
  // to Google's services and from needing a large /dev/shm (containers have 64 MB).
  args: ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"],
  headless: true,
  protocolTimeout: 30_000,
});
const log = { step: "", errors: [], urls: [], chats: [], failed: [] };
const started = Date.now();
try {
  await openServer(browser, log);
  if (args["key-url"]) await keyedServer(browser, log);
  // Nothing but the server's own origin (and the page's data: favicon, which is not a request on the network).
  const origins = new Set([new URL(args.url).origin, args["key-url"] && new URL(args["key-url"]).origin]);
  const foreign = log.urls.filter((u) => !u.startsWith("data:") && !origins.has(new URL(u).origin));
  check(foreign.length === 0, "the page requests nothing from elsewhere", foreign);
  const expected = { "http error": /status of 400/, key: /status of 401/ };
  const unexpected = log.errors.filter((e) => !(expected[e.step] && expected[e.step].test(e.text)));
  check(unexpected.length === 0, "no console errors", unexpected);
} catch (error) {
  console.error(`chat page: ${error.message}`);
  console.error(`(at step "${log.step}"; console errors so far: ${JSON.stringify(log.errors)})`);
  await browser.close();
  process.exit(1);
}
const version = await browser.version();
await browser.close();
const seconds = ((Date.now() - started) / 1000).toFixed(1);
console.log(`chat page: ok (${log.chats.length} chat requests in ${seconds} s, ${version})`);
