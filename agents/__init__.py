"""The four research roles and the chat-model layer."""

from agents.models import LocalChatModel, load_chat_model
from agents.planner import Planner
from agents.schemas import Citation, Draft, Plan, QueryRecord, SearchAction, Verdict
from agents.searcher import Searcher
from agents.selector import Selector
from agents.tools import as_tool
from agents.writer import Writer

__all__ = ["Citation", "Draft", "LocalChatModel", "Plan", "Planner", "QueryRecord",
           "SearchAction", "Searcher", "Selector", "Verdict", "Writer", "as_tool",
           "load_chat_model"]
