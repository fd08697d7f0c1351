//! The JavaScript side of `json`: parsed input, `-e`/`-c` code, lookups and
//! output formatting all happen on QuickJS values, so the results (number
//! formatting, key order, `JSON.stringify` rules, `this` binding) are the
//! ones JavaScript gives, as with the node.js tool.

use rquickjs::function::This;
use rquickjs::{Array, Ctx, FromJs, Function, IntoJs, Object, Value};

use super::args::Indent;
use super::lookup::Bit;

/// Small helpers evaluated once per run; each is a plain JavaScript
/// function so that the semantics are exactly the language's.
const PRELUDE: &str = r#"({
    parse: function (text) { return JSON.parse(text); },
    isArray: function (v) { return Array.isArray(v); },
    compile: function (body) { return new Function(body); },
    test: function (fn, self) { return !!fn.call(self); },
    shallowCopy: function (v) {
        if (Array.isArray(v)) { return v.slice(); }
        if (typeof v === 'object') {
            var c = {};
            Object.keys(v).forEach(function (k) { c[k] = v[k]; });
            return c;
        }
        return v;
    },
    lookup: function (d, bits) {
        for (var i = 0; i < bits.length; i++) {
            var b = bits[i];
            if (d === null) { return undefined; }
            d = (typeof b === 'number' && b < 0) ? d[d.length + b] : d[b];
            if (d === undefined) { return undefined; }
        }
        return d;
    },
    join: function (bits) { return bits.join('.'); },
    indexLookups: function (lookups) {
        for (var i = 0; i < lookups.length; i++) {
            if (lookups[i].length !== 1 || isNaN(Number(lookups[i]))) { return false; }
        }
        return true;
    },
    hasOwn: function (o, k) { return Object.prototype.hasOwnProperty.call(o, k); },
    keys: function (v) { return Object.keys(v); },
    format: function (v, jsony, indent) {
        if (jsony && typeof v === 'string') { return v; }
        if (typeof v === 'undefined') { return undefined; }
        return JSON.stringify(v, null, indent);
    },
    describe: function (e) {
        try { return String(e); } catch (_) { return 'an exception that cannot be printed'; }
    }
})"#;

/// A JavaScript exception or engine failure, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsError(pub String);

pub struct Js<'js> {
    ctx: Ctx<'js>,
    h: Object<'js>,
}

impl<'js> Js<'js> {
    pub fn new(ctx: Ctx<'js>) -> Result<Self, JsError> {
        let h = match ctx.eval::<Object, _>(PRELUDE) {
            Ok(h) => h,
            Err(e) => return Err(JsError(format!("cannot initialise the JavaScript engine: {e}"))),
        };
        Ok(Js { ctx, h })
    }

    /// Turns an rquickjs error into text, fetching the pending exception.
    fn err(&self, e: rquickjs::Error) -> JsError {
        if let rquickjs::Error::Exception = e {
            let exc = self.ctx.catch();
            let text = self
                .h
                .get::<_, Function>("describe")
                .and_then(|f| f.call::<_, String>((exc,)))
                .unwrap_or_else(|_| "an exception".into());
            JsError(text)
        } else {
            JsError(e.to_string())
        }
    }

    fn call<A, R>(&self, name: &str, args: A) -> Result<R, JsError>
    where
        A: rquickjs::function::IntoArgs<'js>,
        R: FromJs<'js>,
    {
        let f: Function = self.h.get(name).map_err(|e| self.err(e))?;
        f.call(args).map_err(|e| self.err(e))
    }

    pub fn undefined(&self) -> Value<'js> {
        Value::new_undefined(self.ctx.clone())
    }

    pub fn parse(&self, text: &str) -> Result<Value<'js>, JsError> {
        self.call("parse", (text,))
    }

    pub fn is_array(&self, v: &Value<'js>) -> Result<bool, JsError> {
        self.call("isArray", (v.clone(),))
    }

    /// `new Function(body)`.
    pub fn compile(&self, body: &str) -> Result<Function<'js>, JsError> {
        self.call("compile", (body,))
    }

    /// `fn.call(this)`.
    pub fn run(&self, f: &Function<'js>, this: &Value<'js>) -> Result<(), JsError> {
        f.call::<_, Value>((This(this.clone()),)).map(|_| ()).map_err(|e| self.err(e))
    }

    /// `!!fn.call(this)`.
    pub fn test(&self, f: &Function<'js>, this: &Value<'js>) -> Result<bool, JsError> {
        self.call("test", (f.clone(), this.clone()))
    }

    pub fn shallow_copy(&self, v: &Value<'js>) -> Result<Value<'js>, JsError> {
        self.call("shallowCopy", (v.clone(),))
    }

    /// A lookup as a JavaScript array of strings and negative numbers.
    pub fn bits(&self, bits: &[Bit]) -> Result<Array<'js>, JsError> {
        let a = Array::new(self.ctx.clone()).map_err(|e| self.err(e))?;
        for (i, b) in bits.iter().enumerate() {
            let v = match b {
                Bit::Key(k) => k.as_str().into_js(&self.ctx),
                Bit::Negative(n) => n.into_js(&self.ctx),
            }
            .map_err(|e| self.err(e))?;
            a.set(i, v).map_err(|e| self.err(e))?;
        }
        Ok(a)
    }

    pub fn lookup(&self, datum: &Value<'js>, bits: &Array<'js>) -> Result<Value<'js>, JsError> {
        self.call("lookup", (datum.clone(), bits.clone()))
    }

    /// `bits.join('.')`: the key of a lookup in the result row.
    pub fn join(&self, bits: &Array<'js>) -> Result<String, JsError> {
        self.call("join", (bits.clone(),))
    }

    /// Whether every lookup is a single component that reads as a number.
    pub fn index_lookups(&self, lookups: &[Array<'js>]) -> Result<bool, JsError> {
        let a = Array::new(self.ctx.clone()).map_err(|e| self.err(e))?;
        for (i, l) in lookups.iter().enumerate() {
            a.set(i, l.clone()).map_err(|e| self.err(e))?;
        }
        self.call("indexLookups", (a,))
    }

    pub fn new_object(&self) -> Result<Object<'js>, JsError> {
        Object::new(self.ctx.clone()).map_err(|e| self.err(e))
    }

    pub fn new_array(&self, items: &[Value<'js>]) -> Result<Value<'js>, JsError> {
        let a = Array::new(self.ctx.clone()).map_err(|e| self.err(e))?;
        for (i, v) in items.iter().enumerate() {
            a.set(i, v.clone()).map_err(|e| self.err(e))?;
        }
        Ok(a.into_value())
    }

    /// The items of an array value.
    pub fn items(&self, v: &Value<'js>) -> Result<Vec<Value<'js>>, JsError> {
        let a = Array::from_value(v.clone()).map_err(|e| self.err(e))?;
        a.iter::<Value>().collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    pub fn set(&self, o: &Object<'js>, key: &str, v: Value<'js>) -> Result<(), JsError> {
        o.set(key, v).map_err(|e| self.err(e))
    }

    /// `o[key]` for any value `o`.
    pub fn get(&self, o: &Value<'js>, key: &str) -> Result<Value<'js>, JsError> {
        let bits = self.bits(&[Bit::Key(key.to_string())])?;
        self.call("lookup", (o.clone(), bits))
    }

    pub fn has_own(&self, o: &Value<'js>, key: &str) -> Result<bool, JsError> {
        self.call("hasOwn", (o.clone(), key))
    }

    /// `Object.keys(v)`.
    pub fn keys(&self, v: &Value<'js>) -> Result<Value<'js>, JsError> {
        self.call("keys", (v.clone(),))
    }

    /// The text printed for a value: `None` for `undefined` (and anything
    /// else `JSON.stringify` turns into `undefined`), a string as-is in
    /// jsony mode, otherwise `JSON.stringify(v, null, indent)`.
    pub fn format(&self, v: &Value<'js>, jsony: bool, indent: Indent) -> Result<Option<String>, JsError> {
        let indent = match indent {
            Indent::Spaces(n) => n.into_js(&self.ctx),
            Indent::Tab => "\t".into_js(&self.ctx),
        }
        .map_err(|e| self.err(e))?;
        self.call("format", (v.clone(), jsony, indent))
    }
}
