// Thumbnails of the images a user message sent (ChatWidget). The kernel makes each one
// from the data that was sent (nbstream/_notebook/sent.py): here it becomes an <img>
// whose src is a data: URL, and only for a raster type with plain base64 data, so
// nothing is fetched from anywhere and nothing runs. An image sent by URL, or one with
// no thumbnail, shows its label alone.
const TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const MAX_DATA = 256 * 1024; // characters of base64: a thumbnail is a few KB
const MAX_SIDE = 320;

const side = (n) => (Number.isInteger(n) && n > 0 && n <= MAX_SIDE ? String(n) : null);

export function thumbnailSrc(image) {
  if (!image || !TYPES.has(image.media_type) || typeof image.data !== "string") return null;
  if (!image.data.length || image.data.length > MAX_DATA || !BASE64.test(image.data)) return null;
  return `data:${image.media_type};base64,${image.data}`;
}

// A row of thumbnails with their labels, or null when the message sent no image.
export function thumbnails(images) {
  if (!Array.isArray(images) || !images.length) return null;
  const row = document.createElement("div");
  row.className = "nbs-thumbs";
  for (const image of images) {
    if (!image || typeof image !== "object") continue;
    const label = typeof image.label === "string" ? image.label : "image";
    const figure = document.createElement("figure");
    figure.className = "nbs-thumb";
    const src = thumbnailSrc(image);
    if (src) {
      const img = document.createElement("img");
      img.src = src;
      img.alt = label;
      img.title = label;
      img.draggable = false;
      img.referrerPolicy = "no-referrer";
      const w = side(image.width);
      const h = side(image.height);
      if (w && h) {
        img.setAttribute("width", w);
        img.setAttribute("height", h);
      }
      figure.append(img);
    }
    const caption = document.createElement("figcaption");
    caption.textContent = label;
    figure.append(caption);
    row.append(figure);
  }
  return row;
}
