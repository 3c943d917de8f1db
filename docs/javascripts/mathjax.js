// MathJax 3 set-up for the formulas on the method pages.
//
// pymdownx.arithmatex (generic mode) wraps every formula in an element of class "arithmatex"
// and writes it with \( \) (inline) or \[ \] (display) delimiters; MathJax is told to look
// only inside those elements, so code blocks and ordinary text are never touched.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*",
    processHtmlClass: "arithmatex",
  },
};

// Material for MkDocs can swap page content without a full reload (instant navigation);
// its document$ observable fires after every such swap, so typeset again each time.
if (typeof document$ !== "undefined") {
  document$.subscribe(function () {
    if (window.MathJax && window.MathJax.typesetPromise) {
      window.MathJax.typesetClear();
      window.MathJax.texReset();
      window.MathJax.typesetPromise();
    }
  });
}
