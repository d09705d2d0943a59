import { afterEach, describe, expect, it } from "vitest";
import chat from "../src/chat.js";
import { thumbnails, thumbnailSrc } from "../src/thumbnails.js";
import { FakeModel } from "./fake_model.js";

// A 1x1 PNG, as the kernel's thumbnail of a sent figure would be (base64).
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

const mounted = [];
afterEach(() => {
  for (const { cleanup, el } of mounted.splice(0)) {
    cleanup();
    el.remove();
  }
});

function panel(messages) {
  const model = new FakeModel({ messages, _messages_rev: 1, status: "idle", totals: {}, title: "m" });
  const el = document.createElement("div");
  document.body.append(el);
  mounted.push({ cleanup: chat.render({ model, el }), el });
  return el;
}

describe("the thumbnail of an image a user message sent", () => {
  it("shows in the panel beside the question, from the data sent", () => {
    const el = panel([
      { id: "t1-user", role: "user", text: "Describe this", turn: "t1",
        images: [{ label: "fig: image/png 640x480, 19 KB", media_type: "image/png",
          data: PNG, width: 160, height: 120 }] },
    ]);
    const body = el.querySelector(".nbs-user .nbs-body");
    expect(body.firstChild.textContent).toBe("Describe this");
    const img = body.querySelector(".nbs-thumbs img");
    expect(img.getAttribute("src")).toBe(`data:image/png;base64,${PNG}`);
    expect([img.getAttribute("width"), img.getAttribute("height")]).toEqual(["160", "120"]);
    expect(img.alt).toBe("fig: image/png 640x480, 19 KB");
    expect(body.querySelector("figcaption").textContent).toBe("fig: image/png 640x480, 19 KB");
  });

  it("is never made from a URL, a script type or data that is not plain base64", () => {
    const bad = [
      { media_type: "image/svg+xml", data: btoa("<svg onload=alert(1)>") },
      { media_type: "text/html", data: PNG },
      { media_type: "image/png", data: "https://evil.test/x.png" },
      { media_type: "image/png", data: `${PNG}"><img src=x onerror=alert(1)>` },
      { media_type: "image/png", url: "https://evil.test/x.png" },
      { media_type: "image/png", data: "A".repeat(300 * 1024) },
      { media_type: "image/png", data: "" },
    ];
    for (const image of bad) expect(thumbnailSrc(image)).toBe(null);
    const row = thumbnails(bad.map((b, i) => ({ ...b, label: `<img src=x onerror=alert(${i})>` })));
    expect(row.querySelectorAll("img")).toHaveLength(0);
    expect(row.querySelectorAll("figcaption")).toHaveLength(bad.length);
    expect(row.querySelector("figcaption").textContent).toBe("<img src=x onerror=alert(0)>");
  });

  it("an image sent by URL shows its label only, and a message with none shows nothing", () => {
    const el = panel([
      { id: "a-user", role: "user", text: "Hi", turn: "a" },
      { id: "b-user", role: "user", text: "See", turn: "b",
        images: [{ label: "image at https://example.test/a.png" }] },
    ]);
    const [a, b] = el.querySelectorAll(".nbs-user .nbs-body");
    expect(a.querySelector(".nbs-thumbs")).toBe(null);
    expect(b.querySelectorAll("img")).toHaveLength(0);
    expect(b.querySelector("figcaption").textContent).toBe("image at https://example.test/a.png");
  });

  it("odd sizes are left to the style sheet", () => {
    const row = thumbnails([{ label: "x", media_type: "image/jpeg", data: PNG, width: 5000, height: -1 }]);
    const img = row.querySelector("img");
    expect(img.hasAttribute("width")).toBe(false);
    expect(img.getAttribute("src").startsWith("data:image/jpeg;base64,")).toBe(true);
  });
});
