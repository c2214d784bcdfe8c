// The API's Redoc page: Redoc styles itself with <style> elements it makes; the page's
// Content-Security-Policy accepts them only with the page's nonce, which this script's
// data-style-nonce carries. Loaded before Redoc's own bundle.
(() => {
  const styleNonce = document.currentScript.dataset.styleNonce;
  const createElement = document.createElement.bind(document);
  document.createElement = (tag, options) => {
    const element = createElement(tag, options);
    if (styleNonce && String(tag).toLowerCase() === "style") element.nonce = styleNonce;
    return element;
  };
})();
