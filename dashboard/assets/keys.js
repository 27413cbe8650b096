// Escape closes the enlarged tile.
document.addEventListener("keydown", function (e) {
  if (e.key === "Escape") {
    var b = document.getElementById("viewer-close");
    var v = document.getElementById("viewer");
    if (b && v && !v.classList.contains("hidden")) { b.click(); }
  }
});
