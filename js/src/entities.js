// What markdown-it gets when it imports "entities" (bundle.mjs redirects it here; so
// does vitest.config.js). markdown-it calls decodeHTML("&name;") only, for a name of
// 2 to 32 letters and digits; CommonMark (and markdown-it-py) decode it only when the
// whole name is an HTML entity. The browser knows every entity: its HTML parser decodes
// them, which saves the bundles entities' 31 KB table. One difference to mind: the
// parser also takes a legacy entity that is only a prefix of the name ("&notit;" →
// "¬it;", "&ampxx;" → "&xx;"), which leaves the rest of the name and the ";" behind,
// while a whole name leaves no ";" (no entity's value ends with one but &semi;'s).
// tests/test_render.py checks every entity name against markdown-it-py.
const NAME = /^&[a-z][a-z0-9]{1,31};$/i;
let area = null;

export function decodeHTML(str) {
  if (!NAME.test(str)) return str;
  area ??= document.createElement("textarea");
  area.innerHTML = str; // RCDATA: character references are decoded, nothing else
  const out = area.value;
  return out.endsWith(";") && str !== "&semi;" ? str : out;
}
