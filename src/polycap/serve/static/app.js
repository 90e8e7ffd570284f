// polycap web page: a thin client of the REST API (GET /v1/models, POST /v1/captions).
// No framework and no external resources, so the page works with no internet at all.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("caption-form");
  const photo = $("photo");
  const drop = $("drop");
  const preview = $("preview");
  const modelSelect = $("model");
  const langBox = $("lang-options");
  const style = $("style");
  const styleHelp = $("style-help");
  const beams = $("beams");
  const keyField = $("key-field");
  const keyInput = $("api-key");
  const submit = $("submit");
  const statusLine = $("status");
  const results = $("results");

  let models = [];
  let previewUrl = null;
  const names = typeof Intl !== "undefined" && Intl.DisplayNames
    ? new Intl.DisplayNames([navigator.language || "en"], { type: "language" })
    : null;

  function languageName(code) {
    try {
      const name = names && names.of(code);
      return name && name !== code ? `${name} (${code})` : code;
    } catch (e) {
      return code;
    }
  }

  function setStatus(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  function authHeaders() {
    const key = keyInput.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      return JSON.stringify(body.detail || body);
    } catch (e) {
      return `HTTP ${response.status}`;
    }
  }

  // ---- models and languages ----------------------------------------------------------------
  async function loadModels() {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (response.status === 401) {
      keyField.hidden = false;
      setStatus("This server needs an API key: enter it below the options.", true);
      return;
    }
    if (!response.ok) {
      setStatus(`Could not list models: ${await errorText(response)}`, true);
      return;
    }
    const body = await response.json();
    models = body.models;
    modelSelect.replaceChildren(
      ...models.map((m) => new Option(m.default ? `${m.name} (default)` : m.name, m.name, m.default, m.default))
    );
    beams.max = String(body.limits.max_beams);
    showModel();
    if (statusLine.classList.contains("error")) setStatus("");
  }

  function currentModel() {
    return models.find((m) => m.name === modelSelect.value) || models[0];
  }

  function showModel() {
    const model = currentModel();
    if (!model) return;
    $("model-help").textContent = model.loaded ? "" : "Loads on first use (the first caption takes longer).";
    const checked = new Set([...langBox.querySelectorAll("input:checked")].map((i) => i.value));
    const langs = model.languages || ["en"];
    langBox.replaceChildren(
      ...langs.map((code, i) => {
        const id = `lang-${code}`;
        const wrap = document.createElement("div");
        wrap.className = "check";
        const box = Object.assign(document.createElement("input"), { type: "checkbox", id, name: "lang", value: code });
        box.checked = checked.size ? checked.has(code) : i === 0;
        const label = Object.assign(document.createElement("label"), { htmlFor: id, textContent: languageName(code) });
        wrap.append(box, label);
        return wrap;
      })
    );
    const noStyles = model.styles === false;
    style.disabled = noStyles;
    styleHelp.textContent = noStyles ? "This model does not write styled captions." : "Free text, e.g. alt text.";
  }

  // ---- choosing and dropping a photo -------------------------------------------------------
  function showPreview() {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    const file = photo.files && photo.files[0];
    if (!file) {
      preview.hidden = true;
      return;
    }
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.alt = `Preview of ${file.name}`;
    preview.hidden = false;
  }

  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      photo.files = event.dataTransfer.files;
      showPreview();
    }
  });
  photo.addEventListener("change", showPreview);
  modelSelect.addEventListener("change", showModel);
  keyInput.addEventListener("change", () => loadModels().catch((e) => setStatus(String(e), true)));

  // ---- captioning ----------------------------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = photo.files && photo.files[0];
    if (!file) {
      setStatus("Choose a photo first.", true);
      photo.focus();
      return;
    }
    const langs = [...langBox.querySelectorAll("input:checked")].map((i) => i.value);
    if (!langs.length) {
      setStatus("Choose at least one language.", true);
      langBox.querySelector("input")?.focus();
      return;
    }
    const data = new FormData();
    data.append("image", file, file.name);
    data.append("model", modelSelect.value);
    data.append("lang", langs.join(","));
    data.append("num_beams", beams.value || "1");
    if (!style.disabled && style.value.trim()) data.append("style", style.value.trim());

    submit.disabled = true;
    form.setAttribute("aria-busy", "true");
    setStatus(`Captioning ${file.name} in ${langs.length} language(s)…`);
    try {
      const response = await fetch("/v1/captions", { method: "POST", body: data, headers: authHeaders() });
      if (response.status === 401) keyField.hidden = false;
      if (!response.ok) {
        setStatus(`Could not caption: ${await errorText(response)}`, true);
        return;
      }
      const body = await response.json();
      showResults(body.results);
      const failed = body.n_failed ? ` (${body.n_failed} failed)` : "";
      setStatus(`Captions ready: ${body.results.length} language(s)${failed}.`, Boolean(body.n_failed));
      const model = currentModel();
      if (model && !model.loaded) {
        model.loaded = true;
        $("model-help").textContent = "";
      }
    } catch (e) {
      setStatus(`Could not reach the server: ${e}`, true);
    } finally {
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });

  function showResults(records) {
    results.replaceChildren(...records.map(card));
  }

  function card(rec) {
    const article = document.createElement("article");
    article.className = "card";
    const title = document.createElement("h3");
    title.textContent = languageName(rec.lang);
    const text = document.createElement("p");
    text.lang = rec.lang;
    text.dir = "auto";
    article.append(title, text);
    if (rec.error) {
      text.className = "caption-error";
      text.setAttribute("role", "alert");
      text.textContent = rec.error;
      return article;
    }
    text.className = "caption-text";
    text.textContent = rec.caption;
    const meta = document.createElement("p");
    meta.className = "meta";
    meta.textContent = `${rec.model}${rec.seconds != null ? ` · ${rec.seconds.toFixed(3)} s` : ""}`;
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(
      copyButton("Copy alt text", rec.caption, `Copy the ${languageName(rec.lang)} caption as alt text`),
      copyButton("Copy <img> tag", imgTag(rec), `Copy an HTML img tag with the ${languageName(rec.lang)} alt text`)
    );
    article.append(meta, actions);
    return article;
  }

  function imgTag(rec) {
    const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
    return `<img src="${esc(rec.image || "photo.jpg")}" alt="${esc(rec.caption)}" lang="${esc(rec.lang)}">`;
  }

  function copyButton(label, text, ariaLabel) {
    const button = Object.assign(document.createElement("button"), { type: "button", textContent: label });
    button.className = "copy";
    button.setAttribute("aria-label", ariaLabel);
    button.addEventListener("click", async () => {
      const ok = await copyText(text);
      button.textContent = ok ? "Copied" : "Copy failed";
      setStatus(ok ? "Copied to the clipboard." : "Could not copy; select the caption text instead.", !ok);
      setTimeout(() => (button.textContent = label), 1500);
    });
    return button;
  }

  async function copyText(text) {
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        return true;
      }
    } catch (e) {
      // fall through to the selection-based copy (no clipboard permission, plain http)
    }
    const area = Object.assign(document.createElement("textarea"), { value: text, readOnly: true });
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    area.remove();
    return ok;
  }

  loadModels().catch((e) => setStatus(`Could not reach the server: ${e}`, true));
})();
