"""The four research roles, the debate writer and the chat-model layer."""

from agents.debate import (
    Aggregator,
    Debater,
    DebateWriter,
    build_debate_graph,
    join_answers,
    split_answers,
)
from agents.models import LocalChatModel, load_chat_model
from agents.planner import Planner
from agents.reporter import Reporter
from agents.schemas import Citation, Draft, Plan, QueryRecord, SearchAction, Verdict
from agents.searcher import Searcher
from agents.selector import Selector
from agents.tools import as_tool
from agents.writer import Writer

__all__ = ["Aggregator", "Citation", "DebateWriter", "Debater", "Draft", "LocalChatModel",
           "Plan", "Planner", "QueryRecord", "Reporter", "SearchAction", "Searcher", "Selector", "Verdict",
           "Writer", "as_tool", "build_debate_graph", "join_answers", "load_chat_model",
           "split_answers"]
