/// JSON <-> PyValue, keeping Python's int/float distinction: a number written with a fraction or an
/// exponent is a float, otherwise an int; floats are written in CPython's repr, so a value survives a
/// round trip bit for bit. Non-finite floats are the strings "nan", "inf", "-inf" in JSON.
module Optim.Core.PyJson

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json

/// A JSON element as a PyValue (objects keep their key order).
let rec ofElement (e: JsonElement) : PyValue =
    match e.ValueKind with
    | JsonValueKind.Null | JsonValueKind.Undefined -> PyValue.None
    | JsonValueKind.True -> PyValue.Bool true
    | JsonValueKind.False -> PyValue.Bool false
    | JsonValueKind.String -> PyValue.Str(e.GetString())
    | JsonValueKind.Number ->
        let raw = e.GetRawText()
        match Int64.TryParse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) with
        | true, i -> PyValue.Int i
        | _ -> PyValue.Float(Double.Parse(raw, CultureInfo.InvariantCulture))
    | JsonValueKind.Array -> PyValue.List [ for x in e.EnumerateArray() -> ofElement x ]
    | JsonValueKind.Object -> PyValue.Dict [ for p in e.EnumerateObject() -> p.Name, ofElement p.Value ]
    | _ -> PyValue.None

/// Parses JSON text, or says why it is not JSON.
let parse (text: string) : Result<PyValue, string> =
    try
        use doc = JsonDocument.Parse(text, JsonDocumentOptions(CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true))
        Ok(ofElement doc.RootElement)
    with :? JsonException as ex -> Error ex.Message

let rec private writeValue (w: Utf8JsonWriter) (v: PyValue) =
    match v with
    | PyValue.None -> w.WriteNullValue()
    | PyValue.Bool b -> w.WriteBooleanValue b
    | PyValue.Int i -> w.WriteNumberValue i
    | PyValue.Float f when Double.IsFinite f -> w.WriteRawValue(PyFormat.float f)
    | PyValue.Float f -> w.WriteStringValue(PyFormat.float f)
    | PyValue.Str s -> w.WriteStringValue s
    | PyValue.List xs | PyValue.Tuple xs ->
        w.WriteStartArray()
        xs |> List.iter (writeValue w)
        w.WriteEndArray()
    | PyValue.Dict kvs ->
        w.WriteStartObject()
        for (k, x) in kvs do
            w.WritePropertyName k
            writeValue w x
        w.WriteEndObject()

/// The value as JSON text (tuples become arrays).
let write (indented: bool) (v: PyValue) : string =
    use ms = new MemoryStream()
    (use w = new Utf8JsonWriter(ms, JsonWriterOptions(Indented = indented))
     writeValue w v)
    Encoding.UTF8.GetString(ms.ToArray())
