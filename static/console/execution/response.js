/* The Final response tab. */

const {h, replace} = Console;

export function renderResponse(snap) {
  const container = document.getElementById("final-response");
  if (snap.final_response_html) {
    // Rendered and sanitized on the server (markdown-it without raw HTML, then nh3); the page's
    // Content-Security-Policy forbids inline script on top.
    container.innerHTML = snap.final_response_html;
  } else {
    replace(container, h("p", {class: "empty"},
      snap.terminal ? "No final response." : "The PM's answer appears here when the execution finishes."));
  }
}
