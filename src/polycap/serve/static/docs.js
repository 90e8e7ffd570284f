// Render /openapi.json as a plain list of endpoints, fields and responses (no external viewer).
"use strict";

(function () {
  const box = document.getElementById("endpoints");

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function resolve(spec, schema) {
    if (schema && schema.$ref) {
      const name = schema.$ref.split("/").pop();
      return (spec.components && spec.components.schemas && spec.components.schemas[name]) || {};
    }
    return schema || {};
  }

  function typeOf(spec, schema) {
    const s = resolve(spec, schema);
    if (s.type === "array") return `array of ${typeOf(spec, s.items)}`;
    if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map((x) => typeOf(spec, x)).join(" | ");
    return (s.type || (schema && schema.$ref ? schema.$ref.split("/").pop() : "any")) + (s.nullable ? " | null" : "");
  }

  function fieldTable(spec, schema) {
    const s = resolve(spec, schema);
    const table = el("table");
    const head = el("tr");
    ["field", "type", "notes"].forEach((h) => head.append(el("th", h)));
    table.append(head);
    const required = new Set(s.required || []);
    Object.entries(s.properties || {}).forEach(([name, prop]) => {
      const row = el("tr");
      row.append(el("td", name + (required.has(name) ? " (required)" : "")));
      row.append(el("td", typeOf(spec, prop)));
      row.append(el("td", resolve(spec, prop).description || ""));
      table.append(row);
    });
    return table;
  }

  function render(spec) {
    box.replaceChildren();
    Object.entries(spec.paths).forEach(([path, methods]) => {
      Object.entries(methods).forEach(([method, op]) => {
        const section = el("section", undefined, "card");
        section.append(el("h3", `${method.toUpperCase()} ${path}`));
        if (op.summary) section.append(el("p", op.summary));
        const body = op.requestBody && op.requestBody.content;
        if (body) {
          Object.entries(body).forEach(([ctype, media]) => {
            section.append(el("h4", `Request body: ${ctype}`));
            section.append(fieldTable(spec, media.schema));
          });
        }
        const codes = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description || ""}`);
        section.append(el("p", `Responses: ${codes.join(" · ")}`, "meta"));
        box.append(section);
      });
    });
  }

  fetch("/openapi.json")
    .then((r) => r.json())
    .then(render)
    .catch((e) => box.replaceChildren(el("p", `Could not load /openapi.json: ${e}`, "status error")));
})();
