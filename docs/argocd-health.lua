-- Argo CD health check for vaultsts.io AssumedRoleCredential (docs/consuming.md says how to install it).
-- Healthy: Ready=True and no failing rotation. Progressing: not issued yet, a spec change not yet observed,
-- or a rotation retried after a transient failure while the Secret is still valid (Reconciling=True).
-- Degraded: the configuration must be fixed (Stalled=True), or the latest attempt failed and the Secret
-- holds no valid credentials for the spec (Ready=False with RotationFailing=True).
local hs = {}

local function condition(conditions, kind)
  for _, c in ipairs(conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function describe(c)
  return c.reason .. ": " .. c.message
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to issue the credentials"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local failing = condition(conditions, "RotationFailing")
local stalled = condition(conditions, "Stalled")
local reconciling = condition(conditions, "Reconciling")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  if is_true(ready) then
    hs.message = hs.message .. " (" .. ready.message .. ")"
  end
  return hs
end
if ready ~= nil and ready.status == "False" and is_true(failing) then
  hs.status = "Degraded"
  hs.message = describe(failing)
  return hs
end
if is_true(reconciling) then
  hs.status = "Progressing"
  if is_true(failing) then
    hs.message = describe(failing)
  else
    hs.message = describe(reconciling)
  end
  if is_true(ready) then
    hs.message = hs.message .. " (" .. ready.message .. ")"
  end
  return hs
end
if is_true(ready) and not is_true(failing) then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the operator to report Ready"
end
return hs
