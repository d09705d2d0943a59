// Stands in for linkify-it in the bundles: markdown-it builds a LinkifyIt at start-up,
// but nbstream renders with linkify off (as markdown-it-py does), so it is never used.
export default class LinkifyIt {
  test() {
    return false;
  }

  match() {
    return null;
  }

  pretest() {
    return false;
  }
}
