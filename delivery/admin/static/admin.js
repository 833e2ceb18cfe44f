// delivery web admin: progressive enhancements. Every page works without this file.
//
// - buttons that only make sense with a script (add/remove/move rows) are shown
// - forms with data-confirm ask before submitting (delete, reset, cancel)
// - a variants field (e.g. expiry: Ttl | Attempts) shows only the chosen variant
// - Strategy: every keystroke is checked against the compiler (POST .../check) and the
//   clause at fault is marked with its position; "Try it" evaluates without reloading
//
// Security: nothing from the server or the user is inserted as HTML (textContent only);
// requests carry the form's CSRF token in the X-CSRF-Token header.
"use strict";

(function () {
  const CHECK_DELAY_MS = 250; // wait for a pause in typing before asking the compiler

  function csrfOf(form) {
    const input = form.querySelector('input[name="csrf"]');
    return input ? input.value : "";
  }

  async function postJson(url, form, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfOf(form) },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!response.ok) {
      throw new Error("the server answered " + response.status);
    }
    return response.json();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- confirmations and revealed controls ----------------------------------------------------

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  document
    .querySelectorAll(".rule-add, .rule-remove, .rule-up, .row-add, .row-remove")
    .forEach(function (button) {
      button.hidden = false;
    });

  // --- variants ---------------------------------------------------------------------------------

  document.querySelectorAll("select.variant-select").forEach(function (select) {
    function show() {
      document.querySelectorAll('[data-variant-of="' + select.name + '"]').forEach(function (box) {
        const chosen = box.dataset.variant === select.value;
        box.hidden = !chosen;
        box.querySelectorAll("input, select").forEach(function (input) {
          input.disabled = !chosen;
        });
      });
    }
    select.addEventListener("change", show);
    show();
  });

  // --- rows of a generic form (e.g. sourceIps) ------------------------------------------------

  function renumber(row, index) {
    row.dataset.index = String(index);
    row.querySelectorAll("input, select").forEach(function (input) {
      input.name = input.name.replace(/\.\d+\./, "." + index + ".");
      input.id = input.id.replace(/-\d+-/, "-" + index + "-");
      input.value = "";
    });
  }

  document.querySelectorAll("button.row-add").forEach(function (button) {
    button.addEventListener("click", function () {
      const table = document.querySelector('table[data-rows="' + button.dataset.rows + '"]');
      const rows = table.querySelectorAll("tbody tr");
      const last = rows[rows.length - 1];
      const copy = last.cloneNode(true);
      let next = 0;
      rows.forEach(function (row) {
        next = Math.max(next, Number(row.dataset.index) + 1);
      });
      renumber(copy, next);
      last.after(copy);
      bindRowRemove(copy);
    });
  });

  function bindRowRemove(row) {
    const button = row.querySelector("button.row-remove");
    if (!button) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      const body = row.parentElement;
      if (body.children.length > 1) {
        row.remove();
      } else {
        row.querySelectorAll("input").forEach(function (input) {
          input.value = "";
        });
      }
    });
  }
  document.querySelectorAll("table.row-table tbody tr").forEach(bindRowRemove);

  // --- Strategy: rules, checks as you type, try it --------------------------------------------

  function expressionOf(section) {
    const match = [];
    section.querySelectorAll("tr.rule").forEach(function (row) {
      const condition = row.querySelector('[name^="if."]');
      const then = row.querySelector('[name^="then."]');
      const ifText = condition ? condition.value : "";
      const thenText = then ? then.value : "";
      if (ifText.trim() || thenText.trim()) match.push({ if: ifText, then: thenText });
    });
    const otherwise = section.querySelector('[name="else"]');
    return { match: match, else: otherwise ? otherwise.value : "" };
  }

  // Map "match[2].if" of the compacted rule list back to the input it came from.
  function inputFor(section, clause) {
    if (clause === "else") return section.querySelector('[name="else"]');
    const found = /^match\[(\d+)\]\.(if|then)$/.exec(clause);
    if (!found) return null;
    let seen = -1;
    let target = null;
    section.querySelectorAll("tr.rule").forEach(function (row) {
      const condition = row.querySelector('[name^="if."]');
      const then = row.querySelector('[name^="then."]');
      if ((condition && condition.value.trim()) || (then && then.value.trim())) seen += 1;
      if (seen === Number(found[1]) && target === null) {
        target = row.querySelector('[name^="' + found[2] + '."]');
      }
    });
    return target;
  }

  function problemItem(problem) {
    const item = el("li", "problem");
    item.dataset.clause = problem.clause;
    item.append(el("span", "clause", problem.clause || "expression"));
    item.append(document.createTextNode(" at position " + problem.position + ": " + problem.reason));
    item.append(el("pre", "caret", problem.text + "\n" + " ".repeat(problem.position) + "^"));
    return item;
  }

  function showProblems(section, problems) {
    section.querySelectorAll(".expr-input").forEach(function (input) {
      input.removeAttribute("aria-invalid");
    });
    const box = section.querySelector(".problems");
    box.replaceChildren();
    if (!problems.length) {
      box.append(el("p", "compiles", "Compiles."));
      return;
    }
    const list = el("ul");
    problems.forEach(function (problem) {
      list.append(problemItem(problem));
      const input = inputFor(section, problem.clause);
      if (input) input.setAttribute("aria-invalid", "true");
    });
    box.append(list);
  }

  function showTrial(section, trial) {
    const output = section.querySelector("output.trial");
    output.replaceChildren();
    output.className = "trial " + (trial.ok ? "ok" : "failed");
    if (!trial.ok) {
      const list = el("ul");
      trial.problems.forEach(function (problem) {
        list.append(problemItem(problem));
      });
      trial.messages.forEach(function (message) {
        list.append(el("li", "", message));
      });
      output.append(list);
      return;
    }
    const rule =
      trial.matched === null ? "no rule matched: else" : "rule " + (trial.matched + 1) + " matched";
    const selects =
      trial.selects === null
        ? "not a name: selects the built-in 'default'"
        : "selects '" + trial.selects + "'";
    output.append(el("code", "value", JSON.stringify(trial.value)));
    output.append(document.createTextNode(" — " + rule + "; " + selects));
  }

  function bindRule(section, row, schedule) {
    row.querySelectorAll(".expr-input").forEach(function (input) {
      input.addEventListener("input", schedule);
    });
    const remove = row.querySelector(".rule-remove");
    if (remove) {
      remove.hidden = false;
      remove.addEventListener("click", function () {
        if (section.querySelectorAll("tr.rule").length > 1) {
          row.remove();
        } else {
          row.querySelectorAll("input").forEach(function (input) {
            input.value = "";
          });
        }
        schedule();
      });
    }
    const up = row.querySelector(".rule-up");
    if (up) {
      up.hidden = false;
      up.addEventListener("click", function () {
        const previous = row.previousElementSibling;
        if (!previous) return;
        // Names carry the order (if.0, if.1...): swap the texts, not the rows.
        ["if", "then"].forEach(function (part) {
          const a = row.querySelector('[name^="' + part + '."]');
          const b = previous.querySelector('[name^="' + part + '."]');
          const text = a.value;
          a.value = b.value;
          b.value = text;
        });
        schedule();
      });
    }
  }

  document.querySelectorAll("section.expression").forEach(function (section) {
    const form = section.querySelector("form.expression-form");
    const prop = section.dataset.prop;
    // getAttribute: form.action would be the button named "action" (DOM named access).
    const base = form.getAttribute("action").replace(/\/[^/]+$/, "");
    let timer = null;
    let latest = 0;

    async function check() {
      const asked = ++latest;
      try {
        const answer = await postJson(base + "/check", form, {
          prop: prop,
          expression: expressionOf(section),
        });
        if (asked === latest) showProblems(section, answer.problems);
      } catch (error) {
        // A failed check changes nothing: Save still checks on the server.
      }
    }

    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(check, CHECK_DELAY_MS);
    }

    section.querySelectorAll("tr.rule").forEach(function (row) {
      bindRule(section, row, schedule);
    });
    const otherwise = section.querySelector('input[name="else"]');
    if (otherwise) otherwise.addEventListener("input", schedule);

    const add = section.querySelector(".rule-add");
    if (add) {
      add.hidden = false;
      add.addEventListener("click", function () {
        const rows = section.querySelectorAll("tr.rule");
        const last = rows[rows.length - 1];
        const copy = last.cloneNode(true);
        let next = 0;
        rows.forEach(function (row) {
          next = Math.max(next, Number(row.dataset.index) + 1);
        });
        copy.dataset.index = String(next);
        copy.querySelector(".num").textContent = String(rows.length + 1);
        copy.querySelectorAll("input").forEach(function (input) {
          input.name = input.name.replace(/\.\d+$/, "." + next);
          input.value = "";
          input.removeAttribute("aria-invalid");
        });
        last.after(copy);
        bindRule(section, copy, schedule);
        copy.querySelector("input").focus();
      });
    }

    const tryButton = form.querySelector('button[name="action"][value="try"]');
    if (tryButton) {
      tryButton.addEventListener("click", async function (event) {
        event.preventDefault();
        try {
          const trial = await postJson(base + "/try", form, {
            prop: prop,
            expression: expressionOf(section),
            samples: form.querySelector('textarea[name="samples"]').value,
          });
          showTrial(section, trial);
        } catch (error) {
          form.requestSubmit(tryButton); // fall back to the form
        }
      });
    }
  });
})();
