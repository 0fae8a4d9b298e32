// Small DOM helpers shared by the panels (no framework: a page this size does not need one).

/** An element with attributes/properties and children (strings become text nodes, never HTML). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    // Through the CSSOM: the console's CSP (style-src 'self') refuses inline style attributes.
    else if (key === "style") node.style.cssText = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

/** Text with `backticked` parts shown as code (for hints such as "run `gpufleet bench`"). */
export function withCode(text) {
  return text.split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part));
}

export function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 90) return `${Math.round(value)} s`;
  if (value < 5400) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

export function integer(value) {
  return value === null || value === undefined ? "" : Number(value).toLocaleString("en-US");
}
