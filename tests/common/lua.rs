//! Pieces of the Lua drivers that run the shipped script under a plain `lua5.4`.

/// Prints what `auth_*` returned (`result`, `extra`): `result=WORD`, then `field=key=value`
/// lines for a table or `message=…` for a string.
pub const PRINT_RESULT: &str = r#"print("result=" .. tostring(result))
if type(extra) == "table" then
  for key, value in pairs(extra) do print("field=" .. key .. "=" .. value) end
else
  print("message=" .. tostring(extra))
end"#;
