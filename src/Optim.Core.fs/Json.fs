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

// ------------------------------------------------------------------------------------------------
// Lossless form, for files Optim writes and reads back itself (state dicts, checkpoints): every
// PyValue comes back as it went in. Non-finite floats are `{"$float": "nan" | "inf" | "-inf"}`,
// tuples `{"$tuple": [...]}`, and a dict that would read as one of those markers (one key starting
// with `$`) is `{"$dict": [[key, value], ...]}`.

let rec private writeLosslessValue (w: Utf8JsonWriter) (v: PyValue) =
    match v with
    | PyValue.Float f when not (Double.IsFinite f) ->
        w.WriteStartObject()
        w.WriteString("$float", PyFormat.float f)
        w.WriteEndObject()
    | PyValue.Tuple xs ->
        w.WriteStartObject()
        w.WritePropertyName "$tuple"
        w.WriteStartArray()
        xs |> List.iter (writeLosslessValue w)
        w.WriteEndArray()
        w.WriteEndObject()
    | PyValue.List xs ->
        w.WriteStartArray()
        xs |> List.iter (writeLosslessValue w)
        w.WriteEndArray()
    | PyValue.Dict [ (k, x) ] when k.StartsWith "$" ->
        w.WriteStartObject()
        w.WritePropertyName "$dict"
        w.WriteStartArray()
        w.WriteStartArray()
        w.WriteStringValue k
        writeLosslessValue w x
        w.WriteEndArray()
        w.WriteEndArray()
        w.WriteEndObject()
    | PyValue.Dict kvs ->
        w.WriteStartObject()
        for (k, x) in kvs do
            w.WritePropertyName k
            writeLosslessValue w x
        w.WriteEndObject()
    | other -> writeValue w other

/// The value as JSON text that `parseLossless` turns back into exactly this value (NaN, ±inf and
/// tuples included).
let writeLossless (v: PyValue) : string =
    use ms = new MemoryStream()
    (use w = new Utf8JsonWriter(ms, JsonWriterOptions(Indented = false))
     writeLosslessValue w v)
    Encoding.UTF8.GetString(ms.ToArray())

let rec private ofLosslessElement (e: JsonElement) : Result<PyValue, string> =
    let all (xs: JsonElement seq) =
        let parsed = xs |> Seq.map ofLosslessElement |> Seq.toList
        match parsed |> List.tryPick (function Error m -> Some m | Ok _ -> Option.None) with
        | Some m -> Error m
        | Option.None -> Ok(parsed |> List.map (function Ok v -> v | Error _ -> PyValue.None))
    match e.ValueKind with
    | JsonValueKind.Array -> all (e.EnumerateArray()) |> Result.map PyValue.List
    | JsonValueKind.Object ->
        let props = e.EnumerateObject() |> Seq.toList
        match props with
        | [ p ] when p.Name = "$float" ->
            match (if p.Value.ValueKind = JsonValueKind.String then p.Value.GetString() else "") with
            | "nan" -> Ok(PyValue.Float Double.NaN)
            | "inf" -> Ok(PyValue.Float Double.PositiveInfinity)
            | "-inf" -> Ok(PyValue.Float Double.NegativeInfinity)
            | other -> Error(sprintf "'$float' must be \"nan\", \"inf\" or \"-inf\", got %s" (p.Value.GetRawText()))
        | [ p ] when p.Name = "$tuple" && p.Value.ValueKind = JsonValueKind.Array ->
            all (p.Value.EnumerateArray()) |> Result.map PyValue.Tuple
        | [ p ] when p.Name = "$dict" && p.Value.ValueKind = JsonValueKind.Array ->
            let pairs =
                [ for kv in p.Value.EnumerateArray() ->
                    if kv.ValueKind = JsonValueKind.Array && kv.GetArrayLength() = 2 && kv.[0].ValueKind = JsonValueKind.String then
                        ofLosslessElement kv.[1] |> Result.map (fun v -> kv.[0].GetString(), v)
                    else Error "'$dict' must hold [key, value] pairs" ]
            match pairs |> List.tryPick (function Error m -> Some m | Ok _ -> Option.None) with
            | Some m -> Error m
            | Option.None -> Ok(PyValue.Dict(pairs |> List.map (function Ok kv -> kv | Error _ -> ("", PyValue.None))))
        | [ p ] when p.Name.StartsWith "$" -> Error(sprintf "unknown marker '%s'" p.Name)
        | _ ->
            let values = all (props |> Seq.map (fun p -> p.Value))
            values |> Result.map (fun vs -> PyValue.Dict(List.zip (props |> List.map (fun p -> p.Name)) vs))
    | _ -> Ok(ofElement e)

/// Parses text written by `writeLossless`, or says why it cannot.
let parseLossless (text: string) : Result<PyValue, string> =
    try
        use doc = JsonDocument.Parse(text)
        ofLosslessElement doc.RootElement
    with :? JsonException as ex -> Error ex.Message
