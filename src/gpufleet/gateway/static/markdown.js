// Markdown of a model's answer, rendered into DOM nodes: paragraphs, headings, lists, block quotes, tables,
// rules, fenced code blocks (with a Copy button), inline code, bold, italic, strike-through and links.
//
// Safe by construction: the answer's text only ever becomes text nodes (createElement + textContent, never
// innerHTML), so `<script>`, `<img onerror=…>` or any other markup in it shows as the characters it is. Links
// are made only for http(s) and mailto addresses, open in a new tab without a referrer, and images are not
// loaded (`![alt](src)` shows as a link to src). An unclosed code fence (an answer still streaming) renders as
// a code block up to the end, so the text does not jump when the fence closes.

import { el } from "./dom.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
const SAFE_LINK = /^(https?:|mailto:)/i;

/** The nodes of `text` rendered as markdown. */
export function renderMarkdown(text) {
  return blocks(text.replace(/\r\n?/g, "\n").split("\n"));
}

function blocks(lines) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      const [, marker, lang] = fence;
      const body = [];
      i += 1;
      while (i < lines.length && !closesFence(lines[i], marker)) body.push(lines[i++]);
      i += 1; // the closing fence (or past the end while it still streams)
      out.push(codeBlock(body.join("\n"), lang));
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      out.push(el(`h${heading[1].length}`, { class: "md-heading" }, inline(heading[2])));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.push(el("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
      out.push(el("blockquote", {}, blocks(quoted)));
      continue;
    }
    if (ITEM.test(line)) {
      const [list, next] = listAt(lines, i);
      out.push(list);
      i = next;
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const rows = [line];
      i += 2;
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(lines[i++]);
      out.push(table(rows));
      continue;
    }
    const paragraph = [];
    while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) paragraph.push(lines[i++]);
    // Single newlines are kept: models lay out answers line by line more often than markdown intends.
    out.push(el("p", {}, paragraph.flatMap((text, n) => (n ? [el("br"), ...inline(text)] : inline(text)))));
  }
  return out;
}

function closesFence(line, marker) {
  const trimmed = line.trim();
  return trimmed.length >= marker.length && trimmed === marker[0].repeat(trimmed.length);
}

function startsBlock(lines, i) {
  const line = lines[i];
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line) ||
    (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-"));
}

/** A list starting at line `start`: its items (each item's indented lines render as its own blocks). */
function listAt(lines, start) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const items = [];
  let i = start;
  while (i < lines.length) {
    const item = ITEM.exec(lines[i]);
    if (!item || item[1].length !== indent || /\d/.test(item[2]) !== ordered) break;
    const body = [item[3]];
    i += 1;
    // Continuation: lines indented past the marker (nested lists, code), or a lazy line of the same paragraph.
    while (i < lines.length) {
      const next = lines[i];
      const nested = ITEM.exec(next);
      if (!next.trim()) {
        if (i + 1 < lines.length && indentOf(lines[i + 1]) > indent && lines[i + 1].trim()) {
          body.push("");
          i += 1;
          continue;
        }
        break;
      }
      if (nested && nested[1].length <= indent) break;
      if (indentOf(next) <= indent && startsBlock(lines, i)) break;
      body.push(next.slice(Math.min(indentOf(next), indent + 2)));
      i += 1;
    }
    const content = blocks(body);
    // A tight item is a single paragraph: show its text without the paragraph's margins.
    const tight = content.length === 1 && content[0].tagName === "P" ? [...content[0].childNodes] : content;
    items.push(el("li", {}, tight));
  }
  const props = ordered && Number.parseInt(first[2], 10) !== 1 ? { start: String(Number.parseInt(first[2], 10)) } : {};
  while (i < lines.length && !lines[i].trim()) i += 1;
  return [el(ordered ? "ol" : "ul", props, items), i];
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function table(rows) {
  const cells = (row) => row.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((cell) => cell.trim());
  const [head, ...body] = rows.map(cells);
  return el("div", { class: "md-table" }, el("table", {},
    el("thead", {}, el("tr", {}, head.map((cell) => el("th", {}, inline(cell))))),
    el("tbody", {}, body.map((row) => el("tr", {}, head.map((_, n) => el("td", {}, inline(row[n] ?? ""))))))));
}

/** A fenced code block with its language and a Copy button. */
export function codeBlock(code, lang = "") {
  const copy = el("button", { type: "button", class: "quiet small copy-code" }, "Copy");
  copy.addEventListener("click", async () => {
    copy.textContent = (await copyText(code)) ? "Copied" : "Copy failed";
    setTimeout(() => { copy.textContent = "Copy"; }, 1500);
  });
  return el("div", { class: "code-block" },
    el("div", { class: "code-head" }, el("span", { class: "lang" }, lang), copy),
    el("pre", {}, el("code", { dataset: lang ? { lang } : {} }, code)));
}

/** Put `text` on the clipboard: the Clipboard API where the page is a secure context (localhost, https), else
 * the older copy command on a hidden text area (a console opened over plain HTTP on a LAN address). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Refused (no permission, page not focused): try the older way below.
    }
  }
  const area = el("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } finally {
    area.remove();
  }
  return copied;
}

// Inline spans, earliest first: `code`, **bold**, __bold__, *italic*, _italic_, ~~strike~~, [text](url), \escape.
const INLINE = new RegExp([
  /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/.source,
  /\*\*(?=\S)([\s\S]*?\S)\*\*/.source,
  /__(?=\S)([\s\S]*?\S)__/.source,
  /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source,
  /(?<![\p{L}\p{N}_])_(?=[^\s_])([\s\S]*?[^\s_])_(?![\p{L}\p{N}_])/.source,
  /~~(?=\S)([\s\S]*?\S)~~/.source,
  /!?\[([^\]\n]+)\]\(\s*<?([^\s)>]+)>?(?:\s+"[^"]*")?\s*\)/.source,
  /\\([!-/:-@[-`{-~])/.source,
].join("|"), "u");

function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const match = INLINE.exec(rest);
    if (!match) {
      out.push(rest);
      break;
    }
    if (match.index) out.push(rest.slice(0, match.index));
    const [whole, , code, bold, boldUnder, italic, italicUnder, strike, linkText, href, escaped] = match;
    if (code !== undefined) out.push(el("code", {}, code.length > 2 && code.startsWith(" ") && code.endsWith(" ") ? code.slice(1, -1) : code));
    else if (bold !== undefined || boldUnder !== undefined) out.push(el("strong", {}, inline(bold ?? boldUnder)));
    else if (italic !== undefined || italicUnder !== undefined) out.push(el("em", {}, inline(italic ?? italicUnder)));
    else if (strike !== undefined) out.push(el("del", {}, inline(strike)));
    else if (linkText !== undefined) out.push(link(linkText, href, whole));
    else if (escaped !== undefined) out.push(escaped);
    rest = rest.slice(match.index + whole.length);
  }
  return out;
}

function link(text, href, whole) {
  if (!SAFE_LINK.test(href)) return whole; // javascript:, data:, relative paths: shown as written, never a link
  return el("a", { href, target: "_blank", rel: "noopener noreferrer nofollow" }, inline(text));
}
