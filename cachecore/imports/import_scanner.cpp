#include "cachecore/imports/import_scanner.hpp"

namespace cachecore::imports {
namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\f';
}

bool is_ident(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           static_cast<unsigned char>(c) >= 0x80;
}

// A cursor over one logical statement (continuations already joined).
struct Cursor {
    std::string_view s;
    std::size_t i = 0;

    void skip_space() {
        while (i < s.size() && (is_space(s[i]) || s[i] == '\n' || s[i] == '\r')) ++i;
    }
    bool keyword(std::string_view word) {
        skip_space();
        if (s.substr(i, word.size()) != word) return false;
        std::size_t end = i + word.size();
        if (end < s.size() && is_ident(s[end])) return false;
        i = end;
        return true;
    }
    bool punct(char c) {
        skip_space();
        if (i < s.size() && s[i] == c) {
            ++i;
            return true;
        }
        return false;
    }
    std::string identifier() {
        skip_space();
        std::size_t start = i;
        while (i < s.size() && is_ident(s[i])) ++i;
        return std::string(s.substr(start, i - start));
    }
    std::string dotted() {
        std::string name = identifier();
        while (!name.empty()) {
            std::size_t save = i;
            if (!punct('.')) break;
            std::string part = identifier();
            if (part.empty()) {
                i = save;
                break;
            }
            name += "." + part;
        }
        return name;
    }
    int dots() {
        int n = 0;
        for (;;) {
            skip_space();
            if (s.substr(i, 3) == "...") {
                n += 3, i += 3;
            } else if (i < s.size() && s[i] == '.') {
                ++n, ++i;
            } else {
                return n;
            }
        }
    }
};

// Tracks whether the statements being read run at import time: a `def` body does not (until
// called), nor does an `if TYPE_CHECKING:` block; class bodies and other blocks do.
struct Blocks {
    int deferred_indent = -1; // indentation of the header that opened a deferred block

    bool deferred() const { return deferred_indent >= 0; }
    void statement(std::string_view statement, int indent) {
        if (deferred_indent >= 0 && indent <= deferred_indent) deferred_indent = -1;
        if (deferred_indent >= 0) return;
        Cursor c{statement};
        bool def = c.keyword("def") || (c.keyword("async") && c.keyword("def"));
        Cursor t{statement};
        bool type_checking = t.keyword("if") && statement.find("TYPE_CHECKING") != statement.npos;
        Cursor e{statement};
        bool handler = e.keyword("except"); // a fallback: `except ImportError: import slow_one`
        if (def || type_checking || handler) deferred_indent = indent;
    }
};

int indentation(std::string_view line) {
    int n = 0;
    for (char c : line) {
        if (c == ' ')
            ++n;
        else if (c == '\t')
            n = (n / 8 + 1) * 8;
        else
            break;
    }
    return n;
}

void parse_statement(std::string_view statement, bool deferred, std::vector<ImportRef>& out) {
    Cursor c{statement};
    if (c.keyword("import")) {
        do {
            std::string name = c.dotted();
            if (name.empty()) return;
            out.push_back(ImportRef{0, std::move(name), {}, deferred});
            if (c.keyword("as")) c.identifier();
        } while (c.punct(','));
        return;
    }
    if (!c.keyword("from")) return;
    ImportRef ref;
    ref.deferred = deferred;
    ref.level = c.dots();
    if (!(ref.level > 0 && c.keyword("import"))) { // `from . import x` names no module
        ref.module = c.dotted();
        if (ref.module.empty() || !c.keyword("import")) return;
    }
    bool paren = c.punct('(');
    if (!c.punct('*')) {
        do {
            if (paren && c.punct(')')) break; // trailing comma
            std::string name = c.identifier();
            if (name.empty()) break;
            ref.names.push_back(std::move(name));
            if (c.keyword("as")) c.identifier();
        } while (c.punct(','));
    }
    if (ref.module.empty() && ref.names.empty()) return; // `from . import *` or broken
    out.push_back(std::move(ref));
}

} // namespace

std::vector<ImportRef> scan_imports(std::string_view src, std::size_t limit) {
    std::vector<ImportRef> out;
    std::string statement;   // the logical statement being collected
    int depth = 0;           // open brackets in `statement`
    bool continued = false;  // the previous physical line ended with a backslash
    std::string_view triple; // the closing quote of an open triple-quoted string, or empty
    Blocks blocks;
    int indent = 0; // of the statement being collected
    auto finish = [&] {
        blocks.statement(statement, indent);
        parse_statement(statement, blocks.deferred(), out);
        statement.clear();
    };
    std::size_t pos = 0;
    while (pos < src.size() && out.size() < limit) {
        std::size_t end = src.find('\n', pos);
        if (end == std::string_view::npos) end = src.size();
        std::string_view line = src.substr(pos, end - pos);
        pos = end + 1;
        if (!triple.empty()) {
            std::size_t close = line.find(triple);
            if (close == std::string_view::npos) continue;
            line.remove_prefix(close + 3);
            triple = {};
            statement.clear(); // code after a string's end on its line is never an import
            continue;
        }
        if (!continued && depth == 0) {
            statement.clear();
            std::size_t first = line.find_first_not_of(" \t\f\r");
            if (first == std::string_view::npos || line[first] == '#') continue; // blank, comment
            indent = indentation(line);
        }
        if (statement.size() > 65536) { // unbalanced brackets after all: start over
            statement.clear();
            depth = 0;
        }
        // Scan the physical line: strip comments and strings, split on `;`, track brackets.
        std::size_t i = 0;
        bool line_done = false;
        while (i < line.size() && !line_done) {
            char ch = line[i];
            if (ch == '#') break;
            if (ch == '"' || ch == '\'') {
                std::string_view q = line.substr(i, 3);
                if (q == "\"\"\"" || q == "'''") {
                    std::size_t close = line.find(q, i + 3);
                    if (close == std::string_view::npos) {
                        triple = q;
                        line_done = true;
                        break;
                    }
                    i = close + 3;
                    statement += " \"\" ";
                    continue;
                }
                std::size_t j = i + 1;
                while (j < line.size() && line[j] != ch) j += line[j] == '\\' ? 2 : 1;
                i = j + 1;
                statement += " \"\" ";
                continue;
            }
            if (ch == '(' || ch == '[' || ch == '{') ++depth;
            if ((ch == ')' || ch == ']' || ch == '}') && depth > 0) --depth;
            if (ch == ';' && depth == 0) {
                finish();
                ++i;
                continue;
            }
            statement += ch;
            ++i;
        }
        if (!triple.empty()) {
            statement.clear();
            depth = 0;
            continued = false;
            continue;
        }
        std::size_t last = statement.find_last_not_of(" \t\r");
        continued = last != std::string::npos && statement[last] == '\\';
        if (continued) {
            statement.resize(last);
            statement += ' ';
            continue;
        }
        if (depth > 0) {
            statement += '\n';
            continue;
        }
        finish();
    }
    if (out.size() > limit) out.resize(limit);
    return out;
}

} // namespace cachecore::imports
