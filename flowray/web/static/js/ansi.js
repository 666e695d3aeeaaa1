// ANSI colours of a log line (SGR: bold, the 16 colours, 256-colour and true colour reduced to
// a class or a style), as text pieces; every other escape sequence is dropped.

const ESCAPE = /\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()][0-9A-Za-z]/g;

export function ansiPieces(line) {
  if (line.includes("\r")) {
    const parts = line.split("\r").filter((p) => p !== "");
    line = parts.length ? parts[parts.length - 1] : "";
  }
  if (!line.includes("\x1b")) return [[line, null]];
  const pieces = [];
  let style = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
  let last = 0;
  ESCAPE.lastIndex = 0;
  let match;
  while ((match = ESCAPE.exec(line)) !== null) {
    if (match.index > last) pieces.push([line.slice(last, match.index), classes(style)]);
    last = ESCAPE.lastIndex;
    if (match[2] === "m") style = sgr(style, match[1]);
  }
  if (last < line.length) pieces.push([line.slice(last), classes(style)]);
  return pieces;
}

function sgr(style, params) {
  const codes = params === "" ? [0] : params.split(";").map((p) => Number(p) || 0);
  const next = { ...style };
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(next, { fg: null, bg: null, bold: false, dim: false,
      italic: false, underline: false });
    else if (code === 1) next.bold = true;
    else if (code === 2) next.dim = true;
    else if (code === 3) next.italic = true;
    else if (code === 4) next.underline = true;
    else if (code === 22) Object.assign(next, { bold: false, dim: false });
    else if (code === 23) next.italic = false;
    else if (code === 24) next.underline = false;
    else if (code >= 30 && code <= 37) next.fg = code - 30;
    else if (code >= 90 && code <= 97) next.fg = code - 90 + 8;
    else if (code === 39) next.fg = null;
    else if (code >= 40 && code <= 47) next.bg = code - 40;
    else if (code >= 100 && code <= 107) next.bg = code - 100 + 8;
    else if (code === 49) next.bg = null;
    else if ((code === 38 || code === 48) && codes[i + 1] === 5) {
      const n = codes[i + 2] ?? 0;
      const colour = n < 16 ? n : `rgb(${rgb256(n).join(",")})`;
      if (code === 38) next.fg = colour;
      else next.bg = colour;
      i += 2;
    } else if ((code === 38 || code === 48) && codes[i + 1] === 2) {
      const colour = `rgb(${codes[i + 2] ?? 0},${codes[i + 3] ?? 0},${codes[i + 4] ?? 0})`;
      if (code === 38) next.fg = colour;
      else next.bg = colour;
      i += 4;
    }
  }
  return next;
}

function rgb256(n) {
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return [v, v, v];
  }
  const i = n - 16;
  const step = (x) => (x === 0 ? 0 : 55 + x * 40);
  return [step(Math.floor(i / 36)), step(Math.floor(i / 6) % 6), step(i % 6)];
}

function classes(style) {
  const out = { cls: [], css: {} };
  if (style.bold) out.cls.push("a-b");
  if (style.dim) out.cls.push("a-d");
  if (style.italic) out.cls.push("a-i");
  if (style.underline) out.cls.push("a-u");
  if (typeof style.fg === "number") out.cls.push(`a-f${style.fg}`);
  else if (style.fg) out.css.color = style.fg;
  if (typeof style.bg === "number") out.cls.push(`a-g${style.bg}`);
  else if (style.bg) out.css.backgroundColor = style.bg;
  return out.cls.length || Object.keys(out.css).length ? out : null;
}

export function plain(line) {
  return ansiPieces(line).map((p) => p[0]).join("");
}
