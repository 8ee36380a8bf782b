-- Argo CD health of optiinfra.io/Approval (see docs/argocd.md).
-- Healthy once Approved; Suspended while it waits for a person's decision; Degraded once
-- Rejected, Expired or Withdrawn (it can never be decided again).
local hs = {status = "Progressing", message = "Waiting for the operator to record it"}
if obj.status == nil or obj.status.phase == nil then
  return hs
end
local observed = obj.status.observedGeneration
if observed ~= nil and obj.metadata.generation ~= nil and observed ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to record generation " .. obj.metadata.generation
  return hs
end
local phase = obj.status.phase
hs.message = phase
if obj.status.message ~= nil and obj.status.message ~= "" then
  hs.message = phase .. ": " .. obj.status.message
end
if phase == "Approved" then
  hs.status = "Healthy"
elseif phase == "Pending" then
  hs.status = "Suspended"
  if obj.status.expiresAt ~= nil then
    hs.message = hs.message .. " (it expires at " .. obj.status.expiresAt .. ")"
  end
elseif phase == "Rejected" or phase == "Expired" or phase == "Withdrawn" then
  hs.status = "Degraded"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. phase
end
return hs
