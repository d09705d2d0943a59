// What markdown-it gets when it imports "entities" (bundle.mjs redirects it here; so
// does vitest.config.js). markdown-it decodes `&name;` with entities' decodeHTML, which
// also takes a legacy entity that is only a prefix of the name ("&notit;" → "¬it;",
// "&ampxx;" → "&xx;"); CommonMark and markdown-it-py take only a whole name, so the
// strict decoder it is. Only the decoder is bundled: not entities' encoding tables.
export { decodeHTMLStrict as decodeHTML } from "entities/lib/decode.js";
