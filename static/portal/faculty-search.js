// Suggest faculty of the requester's organisation while they type a name or username.
(function () {
  const input = document.getElementById("id_faculty_username");
  const list = document.getElementById("faculty-suggestions");
  if (!input || !list) return;
  let timer = null;
  input.addEventListener("input", function () {
    clearTimeout(timer);
    const q = input.value.trim();
    if (q.length < 2) return;
    timer = setTimeout(async function () {
      const response = await fetch(list.dataset.searchUrl + "?q=" + encodeURIComponent(q),
        { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      list.replaceChildren(...data.results.map(function (person) {
        const option = document.createElement("option");
        option.value = person.username;
        option.label = person.name;
        return option;
      }));
    }, 250);
  });
})();
