// Keep the size inputs' min and max on the chosen template's bounds; the server checks anyway.
(function () {
  const select = document.getElementById("id_template");
  const data = document.getElementById("template-size-bounds");
  if (!select || !data) return;
  const bounds = JSON.parse(data.textContent);
  function update() {
    const chosen = bounds[select.value];
    if (!chosen) return;
    for (const [name, range] of Object.entries(chosen)) {
      const input = document.getElementById("id_" + name);
      if (!input) continue;
      input.min = range[0];
      input.max = range[1];
    }
  }
  select.addEventListener("change", update);
  update();
})();
